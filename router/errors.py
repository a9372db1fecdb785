"""Typed errors of the request path. Only the ingresses (gRPC in router/ingress.py, HTTP in
router/openai_api.py) turn them into status codes."""

from __future__ import annotations

import grpc


class RequestError(Exception):
    """Base: an error that reaches the client with a status code and a message."""

    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
    openai_type = "server_error"
    outcome = "error"  # the `outcome` label of pdserve_requests_total


class InvalidRequest(RequestError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    openai_type = "invalid_request_error"
    outcome = "invalid"


class Overloaded(RequestError):
    """Admission refused the request (a limit or quota); retry later."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429
    openai_type = "rate_limit_error"
    outcome = "overloaded"


class Unavailable(RequestError):
    """No healthy replica could serve the request, or an engine failed it; safe to retry."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    openai_type = "service_unavailable"
    outcome = "unavailable"


class DeadlineExceeded(RequestError):
    """The request ran past router.request_timeout_s; it was cancelled on every engine."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
    openai_type = "timeout"
    outcome = "deadline"
