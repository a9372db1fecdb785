"""Keeping the prefix index true from an engine's own KV cache events.

Runs inside each engine replica, next to its engine: vLLM publishes `KVEventBatch` messages on a
ZMQ PUB socket bound to a Unix socket (multipart: topic, 8-byte sequence number, msgpack payload);
this task subscribes and applies BlockStored / BlockRemoved / AllBlocksCleared to the replica's entries in the
Redis index. A gap in sequence numbers means lost events: the replica's entries are dropped and
rebuilt from what follows, so the index may under-report hits but never invents one.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import uuid

from router.prefix_index import PrefixIndex

logger = logging.getLogger("pdserve.kv_events")


def local_events_endpoint() -> str:
    """A Unix-socket endpoint: vLLM's publisher binds ipc:// endpoints (a tcp://host:port one it
    would connect to instead), and nothing leaves the machine."""
    return f"ipc://{tempfile.gettempdir()}/pdserve-kv-{uuid.uuid4().hex[:12]}.sock"


def kv_events_config(endpoint: str, topic: str):
    from vllm.config import KVEventsConfig

    return KVEventsConfig(enable_kv_cache_events=True, publisher="zmq", endpoint=endpoint, topic=topic)


class KVEventIndexer:
    def __init__(self, index: PrefixIndex, replica: str, endpoint: str, topic: str):
        self.index, self.replica, self.endpoint, self.topic = index, replica, endpoint, topic
        self.applied_batches = 0
        self.gaps = 0
        self._last_seq: int | None = None

    async def run(self) -> None:
        import zmq
        import zmq.asyncio
        from msgspec.msgpack import Decoder
        from vllm.distributed.kv_events import KVEventBatch

        decoder = Decoder(type=KVEventBatch)
        ctx = zmq.asyncio.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(self.endpoint)
        sub.setsockopt_string(zmq.SUBSCRIBE, self.topic)
        await self.index.clear_replica(self.replica)  # a new engine starts with an empty cache
        try:
            while True:
                _topic, seq_bytes, payload = await sub.recv_multipart()
                await self._apply(int.from_bytes(seq_bytes, "big"), decoder.decode(payload))
        except asyncio.CancelledError:
            raise
        finally:
            sub.close()

    async def _apply(self, seq: int, batch) -> None:
        from vllm.distributed.kv_events import AllBlocksCleared, BlockRemoved, BlockStored

        if self._last_seq is not None and seq != self._last_seq + 1:
            self.gaps += 1
            logger.warning("replica %s: KV events %d..%d lost; rebuilding its index entries", self.replica, self._last_seq + 1, seq - 1)
            await self.index.clear_replica(self.replica)
        self._last_seq = seq
        for event in batch.events:
            if isinstance(event, BlockStored):
                await self.index.record_stored(self.replica, event.block_hashes)
            elif isinstance(event, BlockRemoved):
                await self.index.record_removed(self.replica, event.block_hashes)
            elif isinstance(event, AllBlocksCleared):
                await self.index.clear_replica(self.replica)
        self.applied_batches += 1
