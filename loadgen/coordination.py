"""Run-wide coordination: charger ids, transaction ids, idTokens, the run ledger, counters.

A load test may run in many processes on many machines; these are the things they must agree
on. :class:`InProcessCoordinator` serves one process and needs no server;
:class:`RedisCoordinator` serves any number of them through one Redis. Every decision that two
workers could race on (who gets which charger id or idToken, which block of transaction
numbers) is one atomic Lua script or command, so no interleaving hands one id to two holders.

Leases. A charger id or idToken is leased for ``lease_ttl`` seconds (Redis server time, so
worker clocks do not matter) and stays leased while the runtime calls :meth:`renew_all`
more often than that. A dead worker stops renewing; its leases expire and the next lease call
anywhere reclaims them. A worker that stalls longer than the TTL may lose a lease to another
worker: :meth:`renew_all` reports it so the runtime can stop that station.

Redis failures. Things that start new work (leases, idTokens, a new block of transaction
ids) raise :class:`CoordinatorUnavailable`, a one-line error, and count in ``failures``;
things that report finished work (ledger entries, connected / disconnected) are buffered and
sent when Redis is back, so connected stations carry on. After a failure, calls fail fast for
``retry_interval`` seconds instead of each waiting for a connect timeout. If Redis comes back
empty (restarted without persistence), the first worker to notice re-creates the run's pools
with a new *epoch* (part of every transaction id, so numbering may restart without repeating
an id) and a grace period of one TTL in which no new lease is granted while the live workers
re-claim what they hold.

idTokens come in groups: the run's pool (group ``""``) and the fleet's per site or charger
table (``site:<id>``, ``chargers:<n>``); a session leases from its charger's group. A token
is one string, ``VALUE`` or ``VALUE\tTYPE`` (:meth:`loadgen.idtokens.IdToken.item`).

Redis keys, all under ``ocpp:run:<run_id>:``: ``meta`` (hash: epoch, pool sizes, ready_at),
``pool:<chargers|tokens|tokens:<group>>:free`` (zset: id by time freed, so ids are reused
oldest first),
``pool:<..>:expiry`` (zset: id by lease expiry, ms), ``pool:<..>:owner`` (hash: id to
holder), ``txn`` (the transaction counter), ``counters`` (hash: connected, peak) and
``ledger`` (a stream of msgpack entries, see :class:`LedgerEntry`). Redis must not evict
keys (``maxmemory-policy noeviction``, the default).
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgpack
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

__all__ = [
    "LEDGER_EVENTS",
    "Coordinator",
    "CoordinatorUnavailable",
    "Counters",
    "InProcessCoordinator",
    "LedgerEntry",
    "RedisCoordinator",
    "Renewal",
    "create",
    "delete_run",
    "ledger_key",
    "new_run_id",
    "read_ledger",
]

MAX_TRANSACTION_ID = 36  # OCPP 2.0.1 transactionId is identifier string[36]
LEDGER_FIELD = b"e"

T = TypeVar("T")


def new_run_id() -> str:
    """A fresh run id (16 hex chars): the master makes one and hands it to every worker."""
    return uuid.uuid4().hex[:16]


def run_prefix(run_id: str) -> str:
    return f"ocpp:run:{run_id}"


def ledger_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}:ledger"


class CoordinatorUnavailable(RuntimeError):
    """Redis cannot be reached (or is re-initialising): the message is one line."""


@dataclass(frozen=True)
class Counters:
    connected: int
    peak: int


@dataclass
class Renewal:
    """What :meth:`Coordinator.renew_all` found lost: those stations must stop."""

    chargers: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


#: the station events that go into the run ledger, and the kind of entry each makes
LEDGER_EVENTS = {"start_acknowledged": "start", "acknowledged": "end"}


@dataclass(frozen=True)
class LedgerEntry:
    """One transaction as the load generator saw it; ``start``/``end`` in epoch s.

    Two kinds, one of each per transaction: ``"start"`` when the CSMS acknowledged its start
    (2.0.1 TransactionEvent Started, 1.6 StartTransaction) and ``"end"`` when it acknowledged
    its end. A start without an end is a transaction the fleet never finished (a dead
    worker's). ``acknowledged`` counts the transaction messages the CSMS answered with a
    CALLRESULT and, for 2.0.1, ``seq_nos`` lists their seqNos as ``(first, last)`` ranges:
    what the CSMS must have stored. For 1.6 ``transaction_id`` is the id the CSMS assigned
    and ``local_id`` the station's placeholder, so the ledger records the mapping.
    """

    charger_id: str
    transaction_id: str
    ocpp_version: str
    start: float
    end: float | None
    energy_wh: float
    messages: int
    local_id: str | None = None
    kind: str = "end"
    acknowledged: int | None = None
    seq_nos: tuple[tuple[int, int], ...] | None = None

    @classmethod
    def from_transaction(
        cls, charger_id: str, ocpp_version: str, transaction: Any, kind: str = "end"
    ) -> LedgerEntry:
        """From a :class:`loadgen.station.Transaction`: ended (``Station.completed``), or
        ``kind="start"`` once its start was acknowledged."""
        csms_assigned = getattr(transaction, "csms_id", None) is not None
        ended = kind == "end"
        return cls(
            charger_id=charger_id,
            transaction_id=transaction.transaction_id,
            ocpp_version=ocpp_version,
            start=float(transaction.started_at),
            end=float(transaction.ended_at) if ended else None,
            energy_wh=float(transaction.energy_wh) if ended else 0.0,
            messages=int(transaction.messages),
            local_id=transaction.local_id if csms_assigned else None,
            kind=kind,
            acknowledged=int(transaction.acknowledged),
            seq_nos=tuple(transaction.acknowledged_seq_nos) or None,
        )

    @classmethod
    def from_station_event(
        cls, charger_id: str, ocpp_version: str, kind: str, detail: dict[str, Any]
    ) -> LedgerEntry | None:
        """The entry a :class:`loadgen.station.Station` listener event makes, if any."""
        entry_kind = LEDGER_EVENTS.get(kind)
        if entry_kind is None:
            return None
        return cls.from_transaction(charger_id, ocpp_version, detail["transaction"], entry_kind)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("local_id", "end", "acknowledged", "seq_nos"):
            if data[name] is None:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerEntry:
        names = cls.__dataclass_fields__
        values = {key: value for key, value in data.items() if key in names}
        if values.get("seq_nos") is not None:  # msgpack hands pairs back as lists
            values["seq_nos"] = tuple((int(a), int(b)) for a, b in values["seq_nos"])
        values.setdefault("end", None)
        return cls(**values)


@runtime_checkable
class Coordinator(Protocol):
    """What a load generator needs to agree on with every other worker of the run.

    Calls that start new work (leases, idTokens, transaction ids, renewals, ``counters``)
    raise :class:`CoordinatorUnavailable` when the store cannot be reached; calls that
    report finished work (release, ledger, connected / disconnected) never do.
    """

    run_id: str
    #: operations that could not reach the coordinator (the metrics layer exports it)
    failures: int

    def lease_charger(self, worker_id: str) -> str | None:
        """A charger id nobody else holds, or None when the whole pool is leased.

        ``worker_id`` labels the holder (Redis shows it to operators); the lease belongs to
        this coordinator, which keeps it until :meth:`release` or a missed renewal.
        """

    def renew(self, charger_id: str) -> bool:
        """Extend one lease; False if it was lost (expired and taken by someone else)."""

    def release(self, charger_id: str) -> None:
        """Give the id back to the pool (never raises: an unreleased lease just expires)."""

    def renew_all(self) -> Renewal:
        """Extend every lease this coordinator holds; call it every ``lease_ttl / 3``."""

    def next_transaction_id(self) -> str:
        """A transaction id (<= 36 chars) unique across the run and all its workers."""

    def acquire_token(self, group: str = "") -> str | None:
        """An idToken of ``group`` (``""``: the run's pool) no other session uses, or None
        when all are in use."""

    def release_token(self, token: str) -> None: ...

    def record_transaction(self, entry: LedgerEntry) -> None:
        """Append a transaction's start or end to the run ledger (buffered if the store is
        down)."""

    def station_connected(self) -> None: ...

    def station_disconnected(self) -> None: ...

    def counters(self) -> Counters:
        """Run-wide connected stations and their peak."""

    def close(self) -> None:
        """Release everything held and flush what is buffered."""


TokenGroups = Mapping[str, Iterable[str]]


def _token_groups(tokens: Iterable[str] | TokenGroups) -> dict[str, list[str]]:
    """Tokens by group; a plain iterable is the run's pool. A token is in one group only."""
    groups = tokens if isinstance(tokens, Mapping) else {"": tokens}
    result = {str(group): [str(item) for item in items] for group, items in groups.items()}
    result.setdefault("", [])
    _unique([item for items in result.values() for item in items], "idTokens")
    return result


def _unique(ids: Iterable[str], what: str) -> list[str]:
    items = [str(item) for item in ids]
    duplicates = sorted(item for item, n in collections.Counter(items).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate {what}: {', '.join(duplicates[:5])}")
    return items


# -- in-process ------------------------------------------------------------------------------


class _LocalPool:
    """Leases with expiry on an injected clock: the in-process twin of the Redis pool."""

    def __init__(self, ids: Sequence[str], ttl: float, clock: Callable[[], float]) -> None:
        self.free: collections.OrderedDict[str, None] = collections.OrderedDict.fromkeys(ids)
        self.expiry: dict[str, float] = {}
        self.owner: dict[str, str] = {}
        self.ttl = ttl
        self.clock = clock
        # (expiry, id), stale entries skipped when popped: reclaiming is O(log n) per lease
        self._deadlines: list[tuple[float, str]] = []

    def _hold(self, item: str, owner: str) -> None:
        until = self.clock() + self.ttl
        self.owner[item] = owner
        self.expiry[item] = until
        heapq.heappush(self._deadlines, (until, item))

    def lease(self, owner: str) -> str | None:
        now = self.clock()
        while self._deadlines and self._deadlines[0][0] <= now:
            until, item = heapq.heappop(self._deadlines)
            if self.expiry.get(item) == until:
                del self.expiry[item], self.owner[item]
                self.free[item] = None
        if not self.free:
            return None
        item, _ = self.free.popitem(last=False)
        self._hold(item, owner)
        return item

    def renew(self, item: str, owner: str) -> bool:
        if self.owner.get(item) == owner:
            self._hold(item, owner)
            return True
        if item in self.free:  # reclaimed, but nobody took it: take it back
            del self.free[item]
            self._hold(item, owner)
            return True
        return False

    def release(self, item: str, owner: str) -> None:
        if self.owner.get(item) == owner:
            del self.owner[item], self.expiry[item]
            self.free[item] = None


class InProcessCoordinator:
    """One process, no server: the default when the run is not distributed.

    Thread- and greenlet-safe (one lock, no I/O under it). Leases still expire, so a user
    that dies without releasing gives its id back after ``lease_ttl``.
    """

    def __init__(
        self,
        charger_ids: Iterable[str],
        tokens: Iterable[str] | TokenGroups = (),
        *,
        run_id: str | None = None,
        lease_ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id = run_id or new_run_id()
        self.failures = 0
        self.lease_ttl = lease_ttl
        self._lock = threading.RLock()
        self._chargers = _LocalPool(_unique(charger_ids, "charger ids"), lease_ttl, clock)
        self._tokens = {
            group: _LocalPool(items, lease_ttl, clock)
            for group, items in _token_groups(tokens).items()
        }
        self._held: dict[str, str] = {}
        self._held_tokens: dict[str, str] = {}  # token -> its group
        self._numbers = itertools.count(1)
        self._ledger: list[LedgerEntry] = []
        self._connected = 0
        self._peak = 0

    def lease_charger(self, worker_id: str) -> str | None:
        with self._lock:
            while True:  # ends: each pass takes a different id out of the free set
                charger_id = self._chargers.lease(worker_id)
                if charger_id is None or charger_id not in self._held:
                    if charger_id is not None:
                        self._held[charger_id] = worker_id
                    return charger_id
                # It expired unrenewed and came back while its user still has it: keep it.
                self._chargers.owner[charger_id] = self._held[charger_id]

    def renew(self, charger_id: str) -> bool:
        with self._lock:
            worker = self._held.get(charger_id)
            if worker is not None and self._chargers.renew(charger_id, worker):
                return True
            self._held.pop(charger_id, None)
            return False

    def release(self, charger_id: str) -> None:
        with self._lock:
            worker = self._held.pop(charger_id, None)
            if worker is not None:
                self._chargers.release(charger_id, worker)

    def renew_all(self) -> Renewal:
        with self._lock:
            lost = Renewal(chargers=[c for c in list(self._held) if not self.renew(c)])
            for token, group in list(self._held_tokens.items()):
                if not self._tokens[group].renew(token, ""):
                    del self._held_tokens[token]
                    lost.tokens.append(token)
            return lost

    def next_transaction_id(self) -> str:
        with self._lock:
            return f"{self.run_id[:8]}-{next(self._numbers)}"

    def acquire_token(self, group: str = "") -> str | None:
        with self._lock:
            pool = self._tokens.get(group)
            if pool is None:
                raise ValueError(f"no idToken group {group!r} in this run")
            token = pool.lease("")
            while token is not None and token in self._held_tokens:
                token = pool.lease("")  # ours already (see lease_charger)
            if token is not None:
                self._held_tokens[token] = group
            return token

    def release_token(self, token: str) -> None:
        with self._lock:
            group = self._held_tokens.pop(token, None)
            if group is not None:
                self._tokens[group].release(token, "")

    def record_transaction(self, entry: LedgerEntry) -> None:
        with self._lock:
            self._ledger.append(entry)

    def ledger(self) -> list[LedgerEntry]:
        with self._lock:
            return list(self._ledger)

    def station_connected(self) -> None:
        with self._lock:
            self._connected += 1
            self._peak = max(self._peak, self._connected)

    def station_disconnected(self) -> None:
        with self._lock:
            self._connected -= 1

    def counters(self) -> Counters:
        with self._lock:
            return Counters(self._connected, self._peak)

    def held(self) -> dict[str, str]:
        with self._lock:
            return dict(self._held)

    def close(self) -> None:
        with self._lock:
            for charger_id in list(self._held):
                self.release(charger_id)
            for token in list(self._held_tokens):
                self.release_token(token)


# -- Redis -----------------------------------------------------------------------------------

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""


def _reclaim_expired(limit: int) -> str:
    """Lua (after ``_NOW``; KEYS[2..4] free, expiry, owner): free up to ``limit`` expired
    leases, a dead worker's."""
    return f"""
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, {limit})
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('ZADD', KEYS[2], now, id)
end
"""


# KEYS: meta, counters, then free / expiry / owner of the chargers and of each token group.
# ARGV: epoch, grace ms, number of charger ids, the charger ids, then per token group its
# number of tokens and the tokens.
# Creates the run's state once; later calls (or other workers) just read it.
_INIT = (
    """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'chargers', 'tokens', 'token_pools')
if meta[1] then
  return {meta[1], tonumber(meta[2]), tonumber(meta[3]), 0, tonumber(meta[4])}
end
"""
    + _NOW
    + """
for k = 2, #KEYS do redis.call('DEL', KEYS[k]) end
local n = tonumber(ARGV[3])
local function fill(key, first, last)
  local batch = {}
  for i = first, last do
    batch[#batch + 1] = i - first
    batch[#batch + 1] = ARGV[i]
    if #batch >= 2000 then
      redis.call('ZADD', key, unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then redis.call('ZADD', key, unpack(batch)) end
end
fill(KEYS[3], 4, 3 + n)
local i = 4 + n
local tokens = 0
local pools = 0
for k = 6, #KEYS, 3 do
  local count = tonumber(ARGV[i])
  fill(KEYS[k], i + 1, i + count)
  i = i + 1 + count
  tokens = tokens + count
  pools = pools + 1
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'chargers', n, 'tokens', tokens,
           'token_pools', pools, 'ready_at', now + tonumber(ARGV[2]), 'created_at', now)
return {ARGV[1], n, tokens, 1, pools}
"""
)

# KEYS: meta, free, expiry, owner. ARGV: owner value, ttl ms.
# Reclaims expired leases (oldest first), then hands out the longest-free id.
_LEASE = (
    """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'ready_at')
if not meta[1] then return {'noinit'} end
"""
    + _NOW
    + """
local ready = tonumber(meta[2]) or 0
if ready > now then return {'wait', meta[1], ready - now} end
"""
    + _reclaim_expired(100)
    + """
local popped = redis.call('ZPOPMIN', KEYS[2])
if #popped == 0 then return {'empty', meta[1]} end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), popped[1])
redis.call('HSET', KEYS[4], popped[1], ARGV[1])
return {'ok', meta[1], popped[1]}
"""
)

# KEYS: meta, free, expiry, owner. ARGV: holder prefix, ttl ms, then (id, owner value) pairs.
# Extends leases still ours; takes back ids that are free (reclaimed but not re-leased, or
# the pool was re-created after Redis lost its data); returns the rest as lost. Then frees
# leases that expired (a dead worker's): leasing reclaims them too, but only when someone
# leases, and until then Redis (and anyone reading it) shows a dead worker's ids as held.
_RENEW = (
    """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'noinit'} end
"""
    + _NOW
    + """
local expires = now + tonumber(ARGV[2])
local prefix = ARGV[1]
local out = {'ok', epoch}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local owner = redis.call('HGET', KEYS[4], id)
  if owner and string.sub(owner, 1, #prefix) == prefix then
    redis.call('ZADD', KEYS[3], expires, id)
  elseif not owner and redis.call('ZREM', KEYS[2], id) == 1 then
    redis.call('ZADD', KEYS[3], expires, id)
    redis.call('HSET', KEYS[4], id, ARGV[i + 1])
  else
    out[#out + 1] = id
  end
end
"""
    + _reclaim_expired(1000)
    + """
return out
"""
)

# KEYS: free, expiry, owner. ARGV: holder prefix, ids. Releases only what is still ours.
_RELEASE = (
    _NOW
    + """
local prefix = ARGV[1]
local released = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local owner = redis.call('HGET', KEYS[3], id)
  if owner and string.sub(owner, 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[1], now, id)
    released = released + 1
  end
end
return released
"""
)

# KEYS: meta, txn. ARGV: block size. A block of numbers, tagged with the epoch they belong to.
_TXN_BLOCK = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'noinit'} end
return {'ok', epoch, redis.call('INCRBY', KEYS[2], ARGV[1])}
"""

# KEYS: meta, counters. ARGV: delta, the epoch the delta belongs to.
_COUNT = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'noinit'} end
if epoch ~= ARGV[2] then return {'epoch', epoch} end
local connected = redis.call('HINCRBY', KEYS[2], 'connected', ARGV[1])
local peak = tonumber(redis.call('HGET', KEYS[2], 'peak') or '0')
if connected > peak then
  redis.call('HSET', KEYS[2], 'peak', connected)
  peak = connected
end
return {'ok', epoch, connected, peak}
"""

_UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_READ_ONLY = redis.exceptions.ReadOnlyError


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _RedisPool:
    """Key names of one leased pool (charger ids or idTokens)."""

    def __init__(self, prefix: str, name: str, ids: list[str]) -> None:
        self.name = name
        self.ids = ids
        self.free = f"{prefix}:pool:{name}:free"
        self.expiry = f"{prefix}:pool:{name}:expiry"
        self.owner = f"{prefix}:pool:{name}:owner"

    @property
    def keys(self) -> list[str]:
        return [self.free, self.expiry, self.owner]


class RedisCoordinator:
    """Coordination of any number of worker processes through one Redis.

    ``charger_ids`` and ``tokens`` must be the same in every worker of a run (the first one
    creates the pools; a worker with a different fleet size is refused). ``block_size``
    transaction numbers are fetched per Redis call; the next block is fetched when half of
    the current one is used, so a short Redis outage does not stop new transactions.
    The process's users share at most ``max_connections`` connections to Redis, waiting
    up to ``command_timeout`` for one.

    Safe for threads and greenlets. Under gevent, create it after monkey-patching (Locust
    patches at start-up) so that its locks are gevent's and the socket I/O cooperative.
    """

    def __init__(
        self,
        url: str,
        run_id: str,
        charger_ids: Iterable[str],
        tokens: Iterable[str] | TokenGroups = (),
        *,
        lease_ttl: float = 30.0,
        block_size: int = 1000,
        retry_interval: float = 1.0,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
        max_pending_ledger: int = 200_000,
        max_connections: int = 50,
    ) -> None:
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        if lease_ttl <= 0:
            raise ValueError("lease_ttl must be positive")
        self.url = url
        self.run_id = run_id
        self.lease_ttl = lease_ttl
        self.block_size = block_size
        self.retry_interval = retry_interval
        self.max_pending_ledger = max_pending_ledger
        self.failures = 0  #: operations that could not reach Redis
        self.resets = 0  #: times Redis was found to have lost the run's state
        self.ledger_dropped = 0  #: ledger entries dropped because the buffer was full
        self.last_error: str | None = None
        self.prefix = run_prefix(run_id)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._owner_prefix = self.holder + " "
        self._meta = f"{self.prefix}:meta"
        self._txn = f"{self.prefix}:txn"
        self._counters = f"{self.prefix}:counters"
        self.ledger_key = ledger_key(run_id)
        self._chargers = _RedisPool(self.prefix, "chargers", _unique(charger_ids, "charger ids"))
        # the run's pool keeps the key it always had; a group's is pool:tokens:<group>
        self._token_pools = {
            group: _RedisPool(self.prefix, f"tokens:{group}" if group else "tokens", items)
            for group, items in _token_groups(tokens).items()
        }
        self._group_of = {
            item: group for group, pool in self._token_pools.items() for item in pool.ids
        }
        self._lock = threading.RLock()  # local state; never held across Redis I/O
        self._io_lock = threading.RLock()  # ordered flushes and epoch changes (may do I/O)
        self._held: dict[str, str] = {}  # charger id -> worker id
        self._held_tokens: dict[str, dict[str, str]] = {g: {} for g in self._token_pools}
        self._blocks: collections.deque[list[Any]] = collections.deque()  # [epoch, next, last]
        self._prefetching = False
        self._epoch: str | None = None
        self._ledger: collections.deque[bytes] = collections.deque()
        self._entry_numbers = itertools.count(1)
        self._pending_delta = 0  # connected +/- not yet in Redis
        self._applied = 0  # what this coordinator has added to ``connected``
        self._down_until = 0.0
        # Thousands of users call at once when they spawn or a worker's users are re-sent:
        # they queue for one of ``max_connections`` connections (at most ``command_timeout``)
        # rather than each opening its own (redis-py's plain pool then fails with "Too many
        # connections" past 100, and every connection is one more open file).
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=command_timeout,
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
            # One quick retry: a pooled connection to a Redis that restarted fails once.
            retry=Retry(NoBackoff(), 1),
            client_name=f"ocpp-loadgen:{self.holder}",  # CLIENT LIST shows whose it is
        )
        self.client = redis.Redis(connection_pool=pool)
        self._where = self._describe(url)
        self._s_init = self.client.register_script(_INIT)
        self._s_lease = self.client.register_script(_LEASE)
        self._s_renew = self.client.register_script(_RENEW)
        self._s_release = self.client.register_script(_RELEASE)
        self._s_txn = self.client.register_script(_TXN_BLOCK)
        self._s_count = self.client.register_script(_COUNT)
        self._init()

    @staticmethod
    def _describe(url: str) -> str:
        kwargs = redis.connection.parse_url(url)
        if "path" in kwargs:
            return str(kwargs["path"])
        return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"

    @property
    def available(self) -> bool:
        """False from a failed call until the next successful one."""
        return self._down_until == 0.0

    @property
    def ledger_pending(self) -> int:
        """Ledger entries waiting for Redis."""
        return len(self._ledger)

    # -- plumbing ----------------------------------------------------------------------------

    def _redis(self, call: Callable[..., T], *args: Any) -> T:
        """Run one Redis call; turn "Redis is not there" into :class:`CoordinatorUnavailable`."""
        if self._down_until and time.monotonic() < self._down_until:
            self.failures += 1
            raise CoordinatorUnavailable(self.last_error or f"Redis at {self._where} unavailable")
        try:
            result = call(*args)
        except (*_UNAVAILABLE, _READ_ONLY) as exc:
            self.failures += 1
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.last_error = f"Redis at {self._where} unavailable: {reason}"
            if self.available:
                log.warning("%s (run %s); retrying in the background", self.last_error, self.run_id)
            self._down_until = time.monotonic() + self.retry_interval
            raise CoordinatorUnavailable(self.last_error) from exc
        if not self.available:
            log.warning("Redis at %s is back (run %s)", self._where, self.run_id)
            self._down_until = 0.0
        return result

    def _script(self, script: Any, keys: list[str], args: list[Any]) -> list[Any]:
        """Run a script that needs the run's state, re-creating it once if Redis lost it."""
        reply = self._redis(script, keys, args)
        if reply[0] == b"noinit":
            self._init()
            reply = self._redis(script, keys, args)
            if reply[0] == b"noinit":
                self.failures += 1
                raise CoordinatorUnavailable(f"Redis at {self._where} keeps losing run state")
        if len(reply) > 1:
            self._seen_epoch(_text(reply[1]))
        return reply

    def _init(self) -> None:
        """Create the run's pools, or join them; after data loss, with a grace period."""
        with self._io_lock:
            grace_ms = int(self.lease_ttl * 1000) if self._epoch is not None else 0
            keys = [self._meta, self._counters, *self._chargers.keys]
            args = [secrets.token_hex(3), grace_ms, len(self._chargers.ids), *self._chargers.ids]
            for pool in self._token_pools.values():
                keys += pool.keys
                args += [len(pool.ids), *pool.ids]
            reply = self._redis(self._s_init, keys, args)
            epoch, chargers, tokens, created = _text(reply[0]), reply[1], reply[2], reply[3]
            pools = reply[4] if len(reply) > 4 else None
            ours = (
                len(self._chargers.ids),
                sum(len(pool.ids) for pool in self._token_pools.values()),
                len(self._token_pools),
            )
            if (chargers, tokens, pools) != ours:
                raise ValueError(
                    f"run {self.run_id} has {chargers} charger ids and {tokens} idTokens in "
                    f"{pools} groups in Redis; this worker has {ours[0]} and {ours[1]} in "
                    f"{ours[2]}: every worker needs the same fleet and tokens"
                )
            if created and self._epoch is not None:
                log.warning(
                    "Redis at %s lost run %s: pools re-created; new leases resume in %.0f s",
                    self._where,
                    self.run_id,
                    grace_ms / 1000,
                )
            self._seen_epoch(epoch)

    def _seen_epoch(self, epoch: str) -> None:
        """A new epoch means Redis lost the run's state: re-claim what we hold, re-count."""
        if epoch == self._epoch:
            return
        with self._io_lock:
            if epoch == self._epoch:
                return
            first = self._epoch is None
            self._epoch = epoch
            if first:
                return
            self.resets += 1
            with self._lock:  # our share of ``connected`` went with the old state
                self._pending_delta += self._applied
                self._applied = 0
            self._renew_pool(self._chargers, self._held)
            self._renew_tokens()

    # -- leases ------------------------------------------------------------------------------

    def _lease(self, pool: _RedisPool, held: dict[str, str], label: str) -> str | None:
        owner = f"{self.holder} {label}"
        ttl_ms = int(self.lease_ttl * 1000)
        while True:  # ends: each pass takes a different id out of the free set
            reply = self._script(self._s_lease, [self._meta, *pool.keys], [owner, ttl_ms])
            status = reply[0]
            if status == b"empty":
                return None
            if status == b"wait":
                self.failures += 1
                raise CoordinatorUnavailable(
                    f"Redis at {self._where} lost run {self.run_id}'s state; new leases "
                    f"resume in {int(reply[2]) / 1000:.1f} s"
                )
            item = _text(reply[2])
            with self._lock:
                if item not in held:
                    held[item] = label
                    return item
            # Our own lease came back: it expired (we stalled) and was reclaimed while one
            # of our users still had it. It is ours again; keep it for that user.

    def _renew_pool(self, pool: _RedisPool, held: dict[str, str]) -> list[str]:
        with self._lock:
            items = list(held.items())
        lost: list[str] = []
        ttl_ms = int(self.lease_ttl * 1000)
        for start in range(0, len(items), 2000):
            args: list[Any] = [self._owner_prefix, ttl_ms]
            for item, label in items[start : start + 2000]:
                args += [item, f"{self.holder} {label}"]
            reply = self._script(self._s_renew, [self._meta, *pool.keys], args)
            lost += [_text(item) for item in reply[2:]]
        if lost:
            with self._lock:
                for item in lost:
                    held.pop(item, None)
            log.warning(
                "lost %d %s leases (this worker stalled longer than the TTL?)", len(lost), pool.name
            )
        return lost

    def _release(self, pool: _RedisPool, held: dict[str, str], items: list[str]) -> None:
        with self._lock:
            items = [item for item in items if held.pop(item, None) is not None]
        if not items:
            return
        # If Redis is down the lease expires by itself; nobody else can have it until then.
        with contextlib.suppress(CoordinatorUnavailable):
            self._redis(self._s_release, pool.keys, [self._owner_prefix, *items])

    def lease_charger(self, worker_id: str) -> str | None:
        return self._lease(self._chargers, self._held, worker_id)

    def renew(self, charger_id: str) -> bool:
        with self._lock:
            if charger_id not in self._held:
                return False
            label = self._held[charger_id]
        args = [
            self._owner_prefix,
            int(self.lease_ttl * 1000),
            charger_id,
            f"{self.holder} {label}",
        ]
        reply = self._script(self._s_renew, [self._meta, *self._chargers.keys], args)
        if len(reply) > 2:
            with self._lock:
                self._held.pop(charger_id, None)
            return False
        return True

    def release(self, charger_id: str) -> None:
        self._release(self._chargers, self._held, [charger_id])

    def renew_all(self) -> Renewal:
        """Renew every lease (raises if Redis is unreachable), then send what is buffered."""
        renewal = Renewal(
            chargers=self._renew_pool(self._chargers, self._held), tokens=self._renew_tokens()
        )
        self._try_flush()
        return renewal

    def held(self) -> dict[str, str]:
        """Charger id -> worker id, for what this coordinator holds."""
        with self._lock:
            return dict(self._held)

    def _renew_tokens(self) -> list[str]:
        """Renew held tokens: one Redis call per group this worker holds tokens of."""
        lost: list[str] = []
        for group, held in self._held_tokens.items():
            if held:
                lost += self._renew_pool(self._token_pools[group], held)
        return lost

    def acquire_token(self, group: str = "") -> str | None:
        pool = self._token_pools.get(group)
        if pool is None:
            raise ValueError(f"no idToken group {group!r} in this run")
        return self._lease(pool, self._held_tokens[group], "token")

    def release_token(self, token: str) -> None:
        group = self._group_of.get(token)
        if group is not None:
            self._release(self._token_pools[group], self._held_tokens[group], [token])

    # -- transaction ids ---------------------------------------------------------------------

    def _take_number(self) -> tuple[str | None, int]:
        with self._lock:
            while self._blocks and self._blocks[0][1] > self._blocks[0][2]:
                self._blocks.popleft()
            left = sum(block[2] - block[1] + 1 for block in self._blocks)
            if not self._blocks:
                return None, 0
            block = self._blocks[0]
            number = block[1]
            block[1] += 1
            tid = f"{self.run_id[:8]}-{block[0]}-{number}"
            return tid, left - 1

    def _fetch_block(self) -> None:
        reply = self._script(self._s_txn, [self._meta, self._txn], [self.block_size])
        epoch, last = _text(reply[1]), int(reply[2])
        with self._lock:
            self._blocks.append([epoch, last - self.block_size + 1, last])

    def next_transaction_id(self) -> str:
        """Ids look like ``3f2a9c1d-7b41e0-1042``: run, epoch, number (at most 36 chars).

        A failed block fetch loses nothing: a block is only used once its INCRBY returned,
        and a block Redis handed out but we never heard about is simply skipped.
        """
        while True:
            tid, left = self._take_number()
            if tid is None:
                self._fetch_block()  # raises CoordinatorUnavailable: nothing left locally
                continue
            if left < self.block_size // 2:
                with self._lock:
                    prefetch = not self._prefetching
                    self._prefetching = True
                if prefetch:
                    try:
                        self._fetch_block()
                    except CoordinatorUnavailable:
                        pass  # still numbers left; try again on the next call
                    finally:
                        self._prefetching = False
            if len(tid) > MAX_TRANSACTION_ID:
                raise ValueError(f"transaction id {tid!r} is longer than 36 characters")
            return tid

    # -- ledger and counters -----------------------------------------------------------------

    def record_transaction(self, entry: LedgerEntry) -> None:
        """Buffered: an entry waits (in order) until Redis takes it; never raises for Redis."""
        data = entry.to_dict()
        data["entry_id"] = f"{self.holder}:{next(self._entry_numbers)}"
        with self._lock:
            if len(self._ledger) >= self.max_pending_ledger:
                self._ledger.popleft()
                self.ledger_dropped += 1
            self._ledger.append(msgpack.packb(data))
        self._try_flush()

    def station_connected(self) -> None:
        with self._lock:
            self._pending_delta += 1
        self._try_flush()

    def station_disconnected(self) -> None:
        with self._lock:
            self._pending_delta -= 1
        self._try_flush()

    def _try_flush(self) -> None:
        with contextlib.suppress(CoordinatorUnavailable):  # kept for the next call / renew_all
            self.flush()

    def flush(self) -> None:
        """Send buffered ledger entries and counter changes; raises if Redis is down."""
        with self._io_lock:
            self._flush_counter()
            while self._ledger:
                with self._lock:
                    batch = list(itertools.islice(self._ledger, 500))
                pipe = self.client.pipeline(transaction=False)
                for packed in batch:
                    pipe.xadd(self.ledger_key, {LEDGER_FIELD: packed})
                self._redis(pipe.execute)
                # A retried pipeline may have appended twice: readers drop repeated entry_ids.
                with self._lock:
                    for _ in batch:
                        self._ledger.popleft()

    def _flush_counter(self) -> None:
        with self._lock:
            delta = self._pending_delta
        if not delta:
            return
        keys = [self._meta, self._counters]
        reply = self._script(self._s_count, keys, [delta, self._epoch])
        if reply[0] == b"epoch":  # _seen_epoch re-queued our earlier share; send it all
            with self._lock:
                delta = self._pending_delta
            reply = self._script(self._s_count, keys, [delta, self._epoch])
        if reply[0] == b"ok":
            with self._lock:
                self._pending_delta -= delta
                self._applied += delta

    def counters(self) -> Counters:
        self._try_flush()
        connected, peak = self._redis(self.client.hmget, self._counters, ["connected", "peak"])
        return Counters(int(connected or 0), int(peak or 0))

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release all leases, flush what is buffered (best effort), close the connection."""
        with self._lock:
            chargers = list(self._held)
            tokens = {group: list(held) for group, held in self._held_tokens.items()}
        self._release(self._chargers, self._held, chargers)
        for group, items in tokens.items():
            if items:
                self._release(self._token_pools[group], self._held_tokens[group], items)
        try:
            self.flush()
        except CoordinatorUnavailable:
            log.warning(
                "closing with %d ledger entries not written: %s", len(self._ledger), self.last_error
            )
        self.client.close()

    def cleanup(self) -> None:
        """Delete all of the run's keys (tests, or a finished run's housekeeping)."""
        delete_run(self.client, self.run_id)


def delete_run(client: redis.Redis, run_id: str) -> int:
    prefix = run_prefix(run_id)
    keys = [f"{prefix}:{name}" for name in ("meta", "txn", "counters", "ledger")]
    for pool in ("chargers", "tokens"):
        keys += [f"{prefix}:pool:{pool}:{part}" for part in ("free", "expiry", "owner")]
    keys += [_text(key) for key in client.scan_iter(match=f"{prefix}:pool:tokens:*", count=1000)]
    return int(client.delete(*keys))


def read_ledger(client: redis.Redis, run_id: str, page: int = 10_000) -> Iterator[dict[str, Any]]:
    """Every ledger entry of a run as a dict, in order (including any repeated entry_ids)."""
    key = ledger_key(run_id)
    start = "-"
    while True:
        rows = client.xrange(key, min=start, max="+", count=page)
        for _, fields in rows:
            yield msgpack.unpackb(fields[LEDGER_FIELD])
        if len(rows) < page:
            return
        start = "(" + _text(rows[-1][0])


def create(
    charger_ids: Iterable[str],
    tokens: Iterable[str] | TokenGroups = (),
    *,
    redis_url: str | None = None,
    run_id: str | None = None,
    **options: Any,
) -> Coordinator:
    """The coordinator for a run: Redis when ``redis_url`` is given, else in-process."""
    if redis_url:
        return RedisCoordinator(redis_url, run_id or new_run_id(), charger_ids, tokens, **options)
    return InProcessCoordinator(charger_ids, tokens, run_id=run_id, **options)
