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
- :class:`FileRegistry`: the same in a JSON-lines file under a file lock: the update state's
  ``registry.jsonl``, shared by ``sidrec update`` and the replicas serving that state on one
  host, so registered items survive restarts and updates.

:class:`Allocator` turns an embedding into candidate SIDs (the frozen quantizer's prefix, the
last level's free codes nearest first) and registers through any of them: ``serve``'s
``POST /items`` and ``update``'s new items share it, so an id or SID is never handed out twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from sidrec.core.errors import SidrecError
from sidrec.core.model_dir import model_sids, sid_hash
from sidrec.core.quantizer import FrozenQuantizer
from sidrec.core.sids import code_token, sid_string

# the registry of an update state served without Redis, and a replica's record of a Redis one
REGISTRY_FILE, RECORD_FILE = "registry.jsonl", "registry.json"


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

# KEYS: 1 the epoch, 2 the catalog version, 3 the deactivated items (set). ARGV: 1 a new
# random epoch, set only when there is none.
EPOCH_LUA = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]) or '0', redis.call('SCARD', KEYS[3])}
"""


def _entry(text: str | bytes, created: bool) -> Registered:
    e = json.loads(text)
    return Registered(int(e["item_id"]), e["sid"], e["title"], e["source_id"], created)


class Status(NamedTuple):
    """What a replica checks before each batch: the registered items, the registry's epoch
    and how many items are deactivated."""

    version: int
    epoch: str
    inactive: int


class MemoryRegistry:
    """The registry in this process (one replica): registered items, deactivated items, and
    the interactions recorded per user."""

    name = "memory"

    def __init__(self, n_base: int) -> None:
        self.n_base, self.identity = n_base, uuid.uuid4().hex
        self.lock = threading.Lock()
        self.by_source: dict[str, int] = {}
        self.by_sid: dict[str, int] = {}
        self.per_prefix: Counter[str] = Counter()
        self.log: list[Registered] = []
        self.inactive: set[int] = set()
        self.users: dict[str, list[int]] = {}

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
        with self._locked():
            if source_id in self.by_source:
                return self.log[self.by_source[source_id] - self.n_base]._replace(created=False)
            held = self.per_prefix[prefix] + base_in_prefix
            free = next((s for s in candidates if s not in self.by_sid), None)
            if held >= capacity or free is None:
                raise PrefixFull(f"SID prefix {prefix} is full: it holds {held} items")
            got = Registered(self.n_base + len(self.log), free, title, source_id, True)
            line = {k: v for k, v in got._asdict().items() if k != "created"}
            self._append(line)
            self._apply(line)
            return got

    def deactivate(self, item_id: int) -> bool:
        """Stop recommending ``item_id`` for good (its id and SID stay taken); False when it
        was inactive already."""
        with self._locked():
            if item_id in self.inactive:
                return False
            self._append({"inactive": item_id})
            self._apply({"inactive": item_id})
            return True

    def record(self, user: str, items: Sequence[int], keep: int) -> list[int]:
        """Append ``items`` to what ``user`` did (its newest ``keep`` kept); returns them."""
        with self._locked():
            line = {"user": user, "items": list(items), "keep": keep}
            self._append(line)
            self._apply(line)
            return list(self.users[user])

    def interactions(self, user: str) -> list[int]:
        """The interactions recorded for ``user``, oldest first."""
        with self._locked():
            return list(self.users.get(user, []))

    def inactive_items(self) -> set[int]:
        with self._locked():
            return set(self.inactive)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self.lock:
            yield

    def _append(self, line: dict[str, Any]) -> None:
        """Persist a change before it takes effect (nothing to do in memory)."""

    def _apply(self, line: dict[str, Any]) -> None:
        if "inactive" in line:
            self.inactive.add(int(line["inactive"]))
        elif "user" in line:
            kept = [*self.users.get(line["user"], []), *line["items"]]
            self.users[line["user"]] = kept[-int(line["keep"]) :]
        else:
            e = _entry(json.dumps(line), False)
            self.by_source[e.source_id] = self.by_sid[e.sid] = e.item_id
            self.per_prefix[e.sid.rsplit("<", 1)[0]] += 1  # the prefix: all but the last code
            self.log.append(e)

    def version(self) -> int:
        with self._locked():
            return len(self.log)

    def epoch(self) -> str:
        """What identifies this registry's contents (a store that lost them gets a new one)."""
        return self.identity

    def status(self) -> Status:
        with self._locked():
            return Status(len(self.log), self.identity, len(self.inactive))

    def since(self, count: int) -> list[Registered]:
        """The registered items after the first ``count``, in item-id order."""
        with self._locked():
            return [r._replace(created=False) for r in self.log[count:]]

    def ping(self) -> None:
        return None


class FileRegistry(MemoryRegistry):
    """The registry in the JSON-lines file ``path``, one change per line (an item, a
    deactivation, a user's interactions): every call first reads what other processes
    appended (under an exclusive lock on ``path.lock``), and a change is written and fsynced
    before it takes effect. A line cut short by a kill is dropped (it never took effect)."""

    name = "file"

    def __init__(self, path: str | Path, n_base: int) -> None:
        super().__init__(n_base)
        self.path, self.offset = Path(path), 0
        self.identity = str(self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock, open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._load()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            f.seek(self.offset)
            data = f.read()
            whole = data.rfind(b"\n") + 1
            if whole < len(data):  # a torn last line: cut it (no writer holds the lock)
                f.truncate(self.offset + whole)
        for line in data[:whole].splitlines():
            self._apply(json.loads(line))
        self.offset += whole

    def _append(self, line: dict[str, Any]) -> None:
        text = json.dumps(line, ensure_ascii=False).encode() + b"\n"
        with open(self.path, "ab") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.offset += len(text)


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
        names = ("by_source", "by_sid", "per_prefix", "log", "version", "epoch", "inactive")
        self.keys = [f"sidrec:{namespace}:{k}" for k in names]
        self.user_key = f"sidrec:{namespace}:user:"
        self.script = self.client.register_script(REGISTER_LUA)
        self.epoch_script = self.client.register_script(EPOCH_LUA)

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

    def epoch(self) -> str:
        """What identifies this registry's contents: a random token set when it was first
        used, so a Redis that lost its data (and a new one) has another."""
        return self.status().epoch

    def status(self) -> Status:
        """The version, epoch and deactivated count in one round trip."""
        keys = [self.keys[5], self.keys[4], self.keys[6]]
        epoch, version, inactive = self._call(self.epoch_script, keys, [uuid.uuid4().hex])
        return Status(int(version), epoch.decode(), int(inactive))

    def deactivate(self, item_id: int) -> bool:
        """Stop recommending ``item_id`` for good; False when it was inactive already."""
        return bool(self._call(self.client.sadd, self.keys[6], item_id))

    def inactive_items(self) -> set[int]:
        return {int(x) for x in self._call(self.client.smembers, self.keys[6])}

    def record(self, user: str, items: Sequence[int], keep: int) -> list[int]:
        """Append ``items`` to what ``user`` did (its newest ``keep`` kept); returns them."""
        pipe = self.client.pipeline()
        pipe.rpush(self.user_key + user, *items)
        pipe.ltrim(self.user_key + user, -keep, -1)
        pipe.lrange(self.user_key + user, 0, -1)
        return [int(x) for x in self._call(pipe.execute)[-1]]

    def interactions(self, user: str) -> list[int]:
        """The interactions recorded for ``user``, oldest first."""
        return [int(x) for x in self._call(self.client.lrange, self.user_key + user, 0, -1)]

    def since(self, count: int) -> list[Registered]:
        """The registered items after the first ``count``, in item-id order."""
        return [_entry(t, False) for t in self._call(self.client.lrange, self.keys[3], count, -1)]

    def ping(self) -> None:
        self._call(self.client.ping)


class Allocator:
    """Registers new items on SIDs of a catalog's frozen quantizer: an item's prefix is its
    embedding's nearest codes, its last code the nearest one free, never a SID of the base
    catalog (the ``base`` codes, items ``0..len(base)-1``) and at most ``capacity`` items per
    prefix (0: the last level's codebook size)."""

    def __init__(self, sid_dir: str | Path, base: Sequence[Sequence[int]], capacity: int) -> None:
        self.frozen = FrozenQuantizer(sid_dir)
        self.levels, size = self.frozen.books.shape[:2]
        self.capacity = capacity or size
        if not 1 <= self.capacity <= size:
            raise SidrecError(
                f"serve.prefix_capacity must be 0 (the last level's {size} codes) or 1..{size}, "
                f"got {capacity}"
            )
        self.n_base = len(base)
        self.base_sids = {sid_string(c[: self.levels]) for c in base}
        self.base_per_prefix = Counter(sid_string(c[: self.levels - 1]) for c in base)

    def register(
        self, registry: Any, x: np.ndarray, source_id: str, title: str, where: str | Path
    ) -> Registered:
        """Register the item of embedding ``x`` (1, D) in ``registry`` (idempotent per source
        id); ``where`` names the embedding in errors."""
        if not np.isfinite(x).all():
            raise SidrecError(f"{where} holds NaN or inf")
        prefix, ranked = self.frozen.ranked_last(x, where)
        head = sid_string(prefix[0].tolist())
        last = self.levels - 1
        candidates = [head + code_token(last, int(c)) for c in ranked[0]]
        candidates = [c for c in candidates if c not in self.base_sids]
        return registry.register(
            source_id, title, head, self.base_per_prefix[head], self.capacity, candidates
        )


def open_registry(
    cfg: dict[str, Any], base: Path, state: Path | None, kind: str | None = None
) -> tuple[Any, Path | None]:
    """The SID registry of the catalog grown from the model ``base`` (whose items are
    ``0..N-1``; registered items follow) and where a replica records what it has seen.
    ``kind`` (default ``serve.registry``): ``redis`` (keys named after ``base``'s SIDs, so
    every update of that catalog shares them; the record in ``serve.registry_record``, else
    in ``state`` or ``base``) or ``memory`` (this process; with a ``state``, the state's
    ``registry.jsonl``, shared with ``sidrec update``)."""
    s = cfg["serve"]
    kind = kind or s["registry"]
    if kind not in ("redis", "memory"):
        raise SidrecError(f"serve.registry must be redis or memory, got {kind!r}")
    table, _ = model_sids(base)
    n = len(table.codes)
    if kind == "memory":
        return (FileRegistry(state / REGISTRY_FILE, n) if state else MemoryRegistry(n)), None
    registry = RedisRegistry(s["redis_url"], n, sid_hash(table)[:16])
    return registry, Path(s["registry_record"] or (state or base) / RECORD_FILE)
