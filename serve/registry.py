"""The SID registry of a served catalog: which SID each item registered at runtime holds.

The model's own catalog (items ``0..N-1``) is fixed and known to every replica; the registry
holds only the items registered since, ``N, N+1, ...`` in registration order: item id by source
id, item id by SID, items per SID prefix, and the log of registered items, whose length is the
catalog version. Two implementations with the same contract:

- :class:`RedisRegistry`: several replicas share one Redis. A registration is one Lua script,
  atomic on the server: return the item if its source id is known (idempotent); refuse when the
  prefix is full; else take the first candidate SID that no item holds, allocate the next item
  id, set both directions, append to the log, bump the version and publish it.
- :class:`MemoryRegistry`: the same under a lock, for a single replica without Redis.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from sidrec.core.errors import SidrecError


def redact(url: str) -> str:
    """``url`` with its credentials (user and password) replaced by ``***``.

    Example:
        >>> redact("redis://user:secret@10.0.0.5:6379/0")
        'redis://***@10.0.0.5:6379/0'
        >>> redact("redis://127.0.0.1:6379/0")
        'redis://127.0.0.1:6379/0'
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


class RegistryUnavailable(SidrecError):
    """The registry cannot be reached (or lost its data); registrations must wait."""


class PrefixFull(SidrecError):
    """Every SID of a prefix is taken."""


class Registered(NamedTuple):
    """A registered item: its id, SID tokens, title and source id, and whether this call
    created it (False: it was registered before, and this is its entry)."""

    item_id: int
    sid: str
    title: str
    source_id: str
    created: bool


# KEYS: 1 item id by source id (hash), 2 item id by SID (hash), 3 items per prefix (hash),
# 4 the log of registered items (list of JSON entries), 5 the catalog version (an integer,
# also the pub/sub channel). ARGV: 1 source id, 2 the entry (JSON, without item_id and sid),
# 3 the prefix, 4 N (items of the model's own catalog), 5 the model's items in the prefix,
# 6 the prefix's capacity, 7.. candidate SIDs, best first.
REGISTER_LUA = """
local known = redis.call('HGET', KEYS[1], ARGV[1])
if known then
  return {'known', redis.call('LINDEX', KEYS[4], tonumber(known) - tonumber(ARGV[4]))}
end
local held = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0') + tonumber(ARGV[5])
if held >= tonumber(ARGV[6]) then return {'full', tostring(held)} end
for i = 7, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    local item = tonumber(ARGV[4]) + redis.call('LLEN', KEYS[4])
    local entry = cjson.decode(ARGV[2])
    entry['item_id'] = item
    entry['sid'] = ARGV[i]
    local text = cjson.encode(entry)
    redis.call('HSET', KEYS[1], ARGV[1], item)
    redis.call('HSET', KEYS[2], ARGV[i], item)
    redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
    redis.call('RPUSH', KEYS[4], text)
    local version = redis.call('INCR', KEYS[5])
    redis.call('PUBLISH', KEYS[5], version)
    return {'new', text}
  end
end
return {'full', tostring(held)}
"""


def _entry(text: str | bytes, created: bool) -> Registered:
    e = json.loads(text)
    return Registered(int(e["item_id"]), e["sid"], e["title"], e["source_id"], created)


class MemoryRegistry:
    """The registry in this process (one replica)."""

    name = "memory"

    def __init__(self, n_base: int) -> None:
        self.n_base = n_base
        self.lock = threading.Lock()
        self.by_source: dict[str, int] = {}
        self.by_sid: dict[str, int] = {}
        self.per_prefix: Counter[str] = Counter()
        self.log: list[Registered] = []

    def register(
        self,
        source_id: str,
        title: str,
        prefix: str,
        base_in_prefix: int,
        capacity: int,
        candidates: Sequence[str],
    ) -> Registered:
        """The item of ``source_id``, registering it on the first free candidate SID."""
        with self.lock:
            if source_id in self.by_source:
                return self.log[self.by_source[source_id] - self.n_base]._replace(created=False)
            held = self.per_prefix[prefix] + base_in_prefix
            free = next((s for s in candidates if s not in self.by_sid), None)
            if held >= capacity or free is None:
                raise PrefixFull(f"SID prefix {prefix} is full: it holds {held} items")
            item = self.n_base + len(self.log)
            self.by_source[source_id] = self.by_sid[free] = item
            self.per_prefix[prefix] += 1
            self.log.append(Registered(item, free, title, source_id, True))
            return self.log[-1]

    def version(self) -> int:
        return len(self.log)

    def since(self, count: int) -> list[Registered]:
        """The registered items after the first ``count``, in item-id order."""
        with self.lock:
            return [r._replace(created=False) for r in self.log[count:]]

    def ping(self) -> None:
        return None


class RedisRegistry:
    """The registry in Redis, shared by every replica serving the same catalog (keys under
    ``sidrec:<catalog hash>:``)."""

    name = "redis"

    def __init__(self, url: str, n_base: int, namespace: str, timeout: float = 1.0) -> None:
        import redis

        self.url, self.n_base = redact(url), n_base  # shown in errors: no credentials
        # every Redis failure (down, timeout, OOM, MISCONF, READONLY, NOAUTH, ...) makes the
        # registry unavailable: registrations answer 503 and recommendations go on
        self.errors, self.down = (redis.RedisError,), (redis.ConnectionError, redis.TimeoutError)
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        names = ("by_source", "by_sid", "per_prefix", "log", "version")
        self.keys = [f"sidrec:{namespace}:{k}" for k in names]
        self.script = self.client.register_script(REGISTER_LUA)

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.errors as e:
            what = "unreachable" if isinstance(e, self.down) else "failing"
            raise RegistryUnavailable(f"the SID registry at {self.url} is {what} ({e})") from e

    def register(
        self,
        source_id: str,
        title: str,
        prefix: str,
        base_in_prefix: int,
        capacity: int,
        candidates: Sequence[str],
    ) -> Registered:
        """The item of ``source_id``, registering it on the first free candidate SID (one
        atomic script on the server)."""
        entry = json.dumps({"title": title, "source_id": source_id})
        args = [source_id, entry, prefix, self.n_base, base_in_prefix, capacity, *candidates]
        status, value = self._call(self.script, self.keys, args)
        if status == b"full":
            raise PrefixFull(f"SID prefix {prefix} is full: it holds {int(value)} items")
        return _entry(value, status == b"new")

    def version(self) -> int:
        return int(self._call(self.client.get, self.keys[4]) or 0)

    def since(self, count: int) -> list[Registered]:
        """The registered items after the first ``count``, in item-id order."""
        return [_entry(t, False) for t in self._call(self.client.lrange, self.keys[3], count, -1)]

    def ping(self) -> None:
        self._call(self.client.ping)
