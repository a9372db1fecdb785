"""OpenTelemetry tracing across the hops of a request: router -> prefill -> decode.

Each Serve replica calls `setup_tracing(config, service)` once; spans go to an OTLP collector or,
on one machine, to a JSON-lines file (`observability.tracing` in the config). The router starts a
request's trace and puts its W3C context (`traceparent`) into the `trace_context` map of the
PrefillRequest and DecodeRequest messages; the pools continue that trace from it (`span`).

    router  pdserve.request                 the whole request (attributes: route, tokens, outcome)
              pdserve.place                 the scheduling decision (replicas, matched blocks)
              pdserve.prefill_call          the router's call to a prefill replica (one per attempt)
                pdserve.prefill             in the prefill replica: engine time, cached tokens
              pdserve.decode_call           the router's stream from a decode replica (one per resume)
                pdserve.decode              in the decode replica: KV pulled or recomputed, tokens

With exporter "none" the tracer is OpenTelemetry's no-op and costs next to nothing.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from opentelemetry import propagate, trace

_setup_lock = threading.Lock()
_configured = False


def setup_tracing(config, service: str) -> None:
    """Install this process's tracer provider (once per process; later calls are no-ops)."""
    global _configured
    spec = config.observability.tracing
    with _setup_lock:
        if _configured or spec.exporter == "none":
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        provider = TracerProvider(
            resource=Resource.create({"service.name": service, "service.namespace": config.name, "process.pid": os.getpid()}),
            sampler=ParentBased(TraceIdRatioBased(spec.sample_ratio)),
        )
        provider.add_span_processor(BatchSpanProcessor(_exporter(spec), schedule_delay_millis=500))
        trace.set_tracer_provider(provider)
        _configured = True


def _exporter(spec):
    if spec.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=spec.otlp_endpoint, insecure=spec.otlp_endpoint.startswith("http://"))
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    path = Path(spec.file_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The SDK's console exporter with a one-line formatter: one JSON span per line, appended by
    # every process (each line is one write, under PIPE_BUF-sized atomic appends for small spans).
    out = open(path, "a", buffering=1)
    return ConsoleSpanExporter(out=out, formatter=lambda span: json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n")


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer("pdserve")


@contextmanager
def span(name: str, carrier: Mapping[str, str] | None = None, **attributes) -> Iterator[tuple[trace.Span, dict[str, str]]]:
    """A span under the trace that `carrier` (W3C headers) names, or a new trace without one; yields
    the span and the carrier for calls made inside it.

    It never becomes the "current" span: the request path is made of async generators, which
    resume in whatever context their consumer has, so contexts are passed explicitly instead."""
    parent = propagate.extract(dict(carrier)) if carrier else None
    current = tracer().start_span(name, context=parent, attributes={k: v for k, v in attributes.items() if v is not None})
    inner: dict[str, str] = {}
    propagate.inject(inner, context=trace.set_span_in_context(current))
    try:
        yield current, inner
    except BaseException as exc:
        if isinstance(exc, GeneratorExit) or type(exc).__name__ == "CancelledError":
            current.set_attribute("pdserve.cancelled", True)
        else:
            current.record_exception(exc)
            current.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))
        raise
    finally:
        current.end()
