"""Faults against the real cluster: a failed KV pull, a prefill replica and a decode replica killed
under a running request. No accepted request is lost or hangs, the client gets the same greedy
tokens as without the fault, the killed replica's engine processes go with it, Serve replaces
the replica, and no KV block is left held.

This file runs after test_disaggregated_path.py (pytest takes files in name order): each kill
costs a replacement engine start (about 30-60 s here).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from pdserve.v1 import handoff_pb2, inference_pb2
from tests.integration import helpers
from tests.integration.conftest import FAULT_PROMPTS, PROMPTS, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def router(cluster):
    from ray import serve

    return serve.get_deployment_handle("Router", app_name=cluster.config.name)


def _only_replica(cluster, pool: str) -> dict:
    return helpers.handle(cluster, pool).figures.remote().result(timeout_s=30)


def _kill_replica(cluster, deployment: str, replica_id: str) -> None:
    """SIGKILL one Serve replica actor, as a node or OOM kill would (Serve starts a replacement)."""
    import ray

    name = f"SERVE_REPLICA::{cluster.config.name}#{deployment}#{replica_id}"
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def _engine_processes(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _wait_gone(processes: list[psutil.Process], timeout_s: float = 30.0) -> list[str]:
    """Names of the processes still running after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            return [f"{p.pid} {p.name()}" for p in alive]
        time.sleep(0.5)


def test_kv_pull_that_fails_is_recomputed_by_decode(cluster, fault_reference_tokens, decode_figures):
    """A handoff naming a prefill engine that is gone (its side channel answers nobody): decode's
    NIXL handshake fails, and under the `recompute` policy decode prefills the prompt itself."""
    from transformers import AutoTokenizer

    item = FAULT_PROMPTS["kv_pull_failed"]
    prompt_ids = AutoTokenizer.from_pretrained(cluster.config.model.resolved_path()).encode(item["prompt"])
    blocks = len(prompt_ids) // cluster.config.block_size
    handoff = handoff_pb2.KVHandoff(
        connector="NixlConnector",
        remote_engine_id=f"gone-{uuid.uuid4().hex[:8]}",
        remote_request_id="gone-request",
        remote_host="127.0.0.1",
        remote_port=free_port(),  # nothing listens there
        remote_block_groups=[handoff_pb2.BlockGroup(block_ids=list(range(1, blocks + 1)))],
        remote_num_tokens=len(prompt_ids),
        tp_size=1,
        pp_size=1,
        dcp_size=1,
        transfer_mode="pull",
    )
    request = handoff_pb2.DecodeRequest(
        request_id=f"pull-fails-{uuid.uuid4().hex[:6]}",
        prompt_token_ids=prompt_ids,
        sampling=handoff_pb2.SamplingSpec(max_tokens=item["max_tokens"], temperature=0.0, top_p=1.0),
        handoff=handoff,
    )
    before = decode_figures()
    chunks = list(helpers.handle(cluster, "decode").options(stream=True).generate.remote(request))
    after = decode_figures()
    assert [t for c in chunks for t in c.token_ids] == fault_reference_tokens["kv_pull_failed"]
    assert chunks[-1].finish_reason == "length"
    assert after["transfer_failures"] > before["transfer_failures"]
    assert after["prompt_tokens_computed"] - before["prompt_tokens_computed"] >= blocks * cluster.config.block_size
    assert helpers.wait_until_no_kv_blocks_held(cluster) == {"prefill": True, "decode": True}


def test_prefill_replica_killed_mid_prefill_falls_back_to_decode(client, cluster, router, fault_reference_tokens, reference_tokens):
    item = FAULT_PROMPTS["prefill_killed"]
    victim = _only_replica(cluster, "prefill")
    engine = _engine_processes(victim["pid"])
    assert engine, "the prefill replica runs its engine in child processes"
    before = router.recovery_figures.remote().result(timeout_s=30)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(helpers.route, client, helpers.greedy(item, request_id="prefill-killed"))
        deadline = time.monotonic() + 30
        while True:  # kill while the engine is prefilling this request
            figures = router.pool_figures.remote().result(timeout_s=30)["prefill"].get(victim["replica"], {})
            if figures.get("unfinished_requests", 0) >= 1 or pending.done() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not pending.done(), "the prefill finished before the kill: make the prompt longer"
        _kill_replica(cluster, "PrefillServer", victim["replica"])
        ids, route, last = pending.result(timeout=300)
    after = router.recovery_figures.remote().result(timeout_s=30)
    assert ids == fault_reference_tokens["prefill_killed"]
    assert route == "colocated"  # decode prefilled it itself
    assert last.finish_reason == inference_pb2.FINISH_REASON_LENGTH
    assert after["prefill_fallbacks"] == before["prefill_fallbacks"] + 1
    assert _wait_gone(engine) == [], "the killed replica's engine processes outlived it"

    replacement = _wait_for_replacement(cluster, "prefill", victim["replica"])
    helpers.wait_until_serving(client)
    _wait_for_load_report(router, "prefill", replacement["replica"])
    ids, route, _ = helpers.route(client, helpers.greedy(PROMPTS[-1], request_id="after-prefill-kill"))
    assert (ids, route) == (reference_tokens[-1], "disaggregated")
    assert helpers.wait_until_no_kv_blocks_held(cluster) == {"prefill": True, "decode": True}


def test_decode_replica_killed_mid_stream_resumes_on_its_replacement(client, cluster, router, fault_reference_tokens):
    item = FAULT_PROMPTS["decode_killed"]
    victim = _only_replica(cluster, "decode")
    engine = _engine_processes(victim["pid"])
    before = router.recovery_figures.remote().result(timeout_s=30)
    ids, last, route = [], None, ""
    killed_after = None
    for response in client.stream(helpers.greedy(item, request_id="decode-killed")):
        route = route or response.route
        ids.extend(response.token_ids)
        last = response
        if killed_after is None and len(ids) >= 10:
            killed_after = len(ids)
            _kill_replica(cluster, "DecodeServer", victim["replica"])
    after = router.recovery_figures.remote().result(timeout_s=30)
    assert route == "disaggregated"
    assert killed_after is not None and killed_after < len(ids)
    assert ids == fault_reference_tokens["decode_killed"], f"killed after {killed_after} tokens"
    assert last.finish_reason == inference_pb2.FINISH_REASON_LENGTH
    assert last.usage.completion_tokens == item["max_tokens"]
    assert after["decode_resumes"] == before["decode_resumes"] + 1
    assert after["by_cause"].get("decode_replica_lost", 0) == before["by_cause"].get("decode_replica_lost", 0) + 1
    assert _wait_gone(engine) == [], "the killed replica's engine processes outlived it"

    _wait_for_replacement(cluster, "decode", victim["replica"])
    helpers.wait_until_serving(client)
    assert helpers.wait_until_no_kv_blocks_held(cluster) == {"prefill": True, "decode": True}


def _wait_for_replacement(cluster, pool: str, victim: str, timeout_s: float = 240.0) -> dict:
    """The pool's replica once it is no longer `victim`. Serve may still list the killed replica
    for a moment (so health can read SERVING right after the kill), and calls may reach it."""
    deadline, answers = time.monotonic() + timeout_s, 0
    while True:
        try:
            figures = helpers.handle(cluster, pool).figures.remote().result(timeout_s=10)
            answers = answers + 1 if figures["replica"] != victim else 0
            if answers == 3:  # three calls in a row reached the replacement: Serve has dropped the victim
                return figures
        except Exception:  # the dead replica was asked, or no replica is assigned yet
            answers = 0
        assert time.monotonic() < deadline, f"no replacement for {victim} after {timeout_s:g} s"
        time.sleep(0.5)


def _wait_for_load_report(router, pool: str, replica: str, timeout_s: float = 30.0) -> None:
    """Until the routers see `replica` in their load view (it reports every 250 ms once started)."""
    deadline = time.monotonic() + timeout_s
    while replica not in router.pool_figures.remote().result(timeout_s=30)[pool]:
        assert time.monotonic() < deadline, f"{replica} never reported its load"
        time.sleep(0.25)
