"""Which replica holds which KV block: a prefix index in Redis, shared by every router replica.

Layout, under one namespace per pool (`{ns}:{pool}`):
    {p}:blk:{hash}     SET of replica ids holding block `hash`
    {p}:rep:{replica}  SET of hashes that replica holds (to drop them all when it goes away)
    {p}:indexed        SET of replicas that have entries
    {p}:changes        pub/sub channel: every write, as "op|replica|hash,hash,..." (op: + - !)
Writers are the engine replicas (router/kv_events.py), from their engine's own BlockStored /
BlockRemoved / AllBlocksCleared events. Readers: routers keep an in-memory mirror fed by the
channel (router/prefix_mirror.py) for their hot path; `match()` here walks a prompt's hash chain
in one Lua call, for tools and for checking the mirror.
"""

from __future__ import annotations

from typing import Iterable, Sequence

# KEYS: none. ARGV: number of pool prefixes P, the P prefixes, then the chain's hashes in order.
# Returns one flat list per prefix, [replica, count, replica, count, ...]: the consecutive leading
# blocks each replica holds. One call answers every pool.
_MATCH_LUA = """
local npools = tonumber(ARGV[1])
local result = {}
for p = 1, npools do
  local prefix = ARGV[1 + p]
  local counts = {}
  local alive = nil
  for i = 2 + npools, #ARGV do
    local members = redis.call('SMEMBERS', prefix .. ':blk:' .. ARGV[i])
    local next_alive = {}
    local any = false
    for _, r in ipairs(members) do
      if alive == nil or alive[r] then
        next_alive[r] = true
        counts[r] = i - 1 - npools
        any = true
      end
    end
    if not any then break end
    alive = next_alive
  end
  local out = {}
  for r, c in pairs(counts) do
    out[#out + 1] = r
    out[#out + 1] = c
  end
  result[p] = out
end
return result
"""


class PrefixIndex:
    """Async view of one pool's index (`redis.asyncio.Redis` client)."""

    def __init__(self, redis, namespace: str, pool: str):
        self._redis = redis
        self.prefix = f"{namespace}:{pool}"
        self.channel = f"{self.prefix}:changes"
        self._match = redis.register_script(_MATCH_LUA)

    async def match(self, hashes: Sequence[int]) -> dict[str, int]:
        return (await match_pools([self], hashes))[0]

    async def record_stored(self, replica: str, hashes: Iterable[int]) -> None:
        hashes = list(hashes)
        if not hashes:
            return
        pipe = self._redis.pipeline(transaction=False)
        for h in hashes:
            pipe.sadd(f"{self.prefix}:blk:{h}", replica)
        pipe.sadd(f"{self.prefix}:rep:{replica}", *hashes)
        pipe.sadd(f"{self.prefix}:indexed", replica)
        pipe.publish(self.channel, change("+", replica, hashes))
        await pipe.execute()

    async def record_removed(self, replica: str, hashes: Iterable[int]) -> None:
        hashes = list(hashes)
        if not hashes:
            return
        pipe = self._redis.pipeline(transaction=False)
        for h in hashes:
            pipe.srem(f"{self.prefix}:blk:{h}", replica)
        pipe.srem(f"{self.prefix}:rep:{replica}", *hashes)
        pipe.publish(self.channel, change("-", replica, hashes))
        await pipe.execute()

    async def clear_replica(self, replica: str) -> int:
        """Forget everything `replica` holds (engine restart, cache reset, or the replica is gone)."""
        key = f"{self.prefix}:rep:{replica}"
        hashes = await self._redis.smembers(key)
        pipe = self._redis.pipeline(transaction=False)
        for h in hashes:
            pipe.srem(f"{self.prefix}:blk:{_text(h)}", replica)
        pipe.delete(key)
        pipe.srem(f"{self.prefix}:indexed", replica)
        pipe.publish(self.channel, change("!", replica, ()))
        await pipe.execute()
        return len(hashes)

    async def snapshot(self) -> dict[str, set[int]]:
        """Every replica's hashes, read from Redis (a mirror's starting point)."""
        replicas = [_text(r) for r in await self._redis.smembers(f"{self.prefix}:indexed")]
        pipe = self._redis.pipeline(transaction=False)
        for r in replicas:
            pipe.smembers(f"{self.prefix}:rep:{r}")
        rows = await pipe.execute() if replicas else []
        return {r: {int(h) for h in row} for r, row in zip(replicas, rows)}

    async def blocks_held(self, replica: str) -> int:
        return await self._redis.scard(f"{self.prefix}:rep:{replica}")


def change(op: str, replica: str, hashes: Iterable[int]) -> str:
    return f"{op}|{replica}|{','.join(str(h) for h in hashes)}"


def parse_change(message: str) -> tuple[str, str, list[int]]:
    op, replica, hashes = message.split("|", 2)
    return op, replica, [int(h) for h in hashes.split(",")] if hashes else []


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def match_pools(indexes: Sequence[PrefixIndex], hashes: Sequence[int]) -> list[dict[str, int]]:
    """`match` for several pools' indexes (same Redis) in one round trip."""
    if not hashes:
        return [{} for _ in indexes]
    flats = await indexes[0]._match(args=[len(indexes), *(i.prefix for i in indexes), *hashes])
    return [{_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)} for flat in flats]
