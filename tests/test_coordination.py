"""Coordination against the machine's real Redis (and test-owned ones that are stopped and
restarted): exclusive leases under any interleaving, many processes, dead workers, idTokens,
unique transaction ids, the ledger, counters, and a Redis outage in the middle of a run."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from loadgen import coordination
from loadgen.coordination import (
    Coordinator,
    CoordinatorUnavailable,
    Counters,
    InProcessCoordinator,
    LedgerEntry,
    RedisCoordinator,
    new_run_id,
    read_ledger,
)
from loadgen.reconcile import LedgerSource
from loadgen.station import Transaction
from tests.conftest import REDIS_URL, RedisServer

pytestmark = pytest.mark.seconds(37)  # conftest.py: the start order

CHARGERS = [f"charger_{n:03d}" for n in range(1, 6)]
TOKENS = ["token_a", "token_b", "token_c"]


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def run_id(raw: redis.Redis) -> Iterator[str]:
    """A unique run on the shared Redis; its keys are deleted afterwards."""
    run = f"test-{new_run_id()}"
    yield run
    coordination.delete_run(raw, run)


@pytest.fixture
def coordinators(run_id: str) -> Iterator[Any]:
    """``make(**options)``: RedisCoordinators (workers) of one run; closed at the end."""
    made: list[RedisCoordinator] = []

    def make(
        chargers: list[str] = CHARGERS, tokens: list[str] = TOKENS, **options: Any
    ) -> RedisCoordinator:
        coordinator = RedisCoordinator(REDIS_URL, run_id, chargers, tokens, **options)
        made.append(coordinator)
        return coordinator

    yield make
    for coordinator in made:
        coordinator.close()


def force_expire(raw: redis.Redis, coordinator: RedisCoordinator, ids: Any = None) -> None:
    """What a stall longer than the TTL does: the leases' expiry moves into the past."""
    prefix = coordinator.prefix
    owners = raw.hgetall(f"{prefix}:pool:chargers:owner")
    for charger_id, owner in owners.items():
        mine = owner.decode().startswith(coordinator.holder + " ")
        if mine and (ids is None or charger_id.decode() in ids):
            raw.zadd(f"{prefix}:pool:chargers:expiry", {charger_id: 0})


# -- both implementations ------------------------------------------------------------------


def test_both_implementations_satisfy_the_protocol(coordinators: Any) -> None:
    assert isinstance(InProcessCoordinator(CHARGERS), Coordinator)
    assert isinstance(coordinators(), Coordinator)
    assert isinstance(coordination.create(CHARGERS), InProcessCoordinator)
    redis_one = coordination.create(CHARGERS, redis_url=REDIS_URL, run_id=f"test-{new_run_id()}")
    try:
        assert isinstance(redis_one, RedisCoordinator)
    finally:
        redis_one.close()
        redis_one.cleanup()


def test_in_process_leases_expire_and_come_back_in_order() -> None:
    now = [0.0]
    coordinator = InProcessCoordinator(CHARGERS, TOKENS, lease_ttl=10, clock=lambda: now[0])
    leased = [coordinator.lease_charger("w") for _ in CHARGERS]
    assert leased == CHARGERS
    assert coordinator.lease_charger("w") is None
    coordinator.release("charger_002")
    assert coordinator.lease_charger("w2") == "charger_002"
    now[0] = 5
    assert coordinator.renew_all().chargers == []
    now[0] = 14  # renewed at 5: alive until 15
    assert coordinator.lease_charger("w3") is None
    now[0] = 30  # nobody renewed: everything expired; our own ids come back to their users
    assert coordinator.lease_charger("w3") is None
    assert coordinator.renew_all().chargers == []
    assert set(coordinator.held()) == set(CHARGERS)
    ids = {coordinator.next_transaction_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(tid) <= 36 for tid in ids)
    tokens = [coordinator.acquire_token() for _ in range(4)]
    assert tokens[:3] == TOKENS and tokens[3] is None
    coordinator.station_connected()
    coordinator.station_connected()
    coordinator.station_disconnected()
    assert coordinator.counters() == Counters(1, 2)
    entry = LedgerEntry("charger_001", "tx-1", "2.0.1", 1.0, 2.0, 10.0, 3)
    coordinator.record_transaction(entry)
    assert coordinator.ledger() == [entry]
    coordinator.close()
    assert coordinator.held() == {}
    assert coordinator.lease_charger("w") is not None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("lrat"), st.integers(0, 3)), max_size=60))
def test_in_process_never_gives_a_held_id_again(ops: list[tuple[str, int]]) -> None:
    """Any sequence of lease / release / renew / time passing, one process."""
    now = [0.0]
    coordinator = InProcessCoordinator(CHARGERS, lease_ttl=10, clock=lambda: now[0])
    for op, n in ops:
        held = coordinator.held()
        if op == "l":
            charger_id = coordinator.lease_charger(f"user{n}")
            assert charger_id is None or charger_id not in held
            if charger_id is None:  # exhausted means every id is in use
                assert set(coordinator.held()) == set(CHARGERS)
        elif op == "r" and held:
            coordinator.release(sorted(held)[n % len(held)])
        elif op == "a":
            coordinator.renew_all()
        elif op == "t":
            now[0] += 4 * n
        pool = coordinator._chargers
        assert set(pool.free) | set(pool.owner) == set(CHARGERS)
        assert not set(pool.free) & set(pool.owner)
        assert set(coordinator.held()) <= set(pool.owner) | set(pool.free)


# -- the lease logic (Lua) under any interleaving: a property test ---------------------------


class LeaseMachine(RuleBasedStateMachine):
    """Three workers on one run lease, release, renew, stall past the TTL, die, and Redis
    may lose everything; the model tracks which holdings are *valid* (leased or renewed
    since the holder's last stall / the last data loss). Valid holdings never overlap."""

    WORKERS = 3
    POOL = CHARGERS[:2]  # small, so workers run it dry and reclaim each other's ids

    def __init__(self) -> None:
        super().__init__()
        self.raw = redis.Redis.from_url(REDIS_URL)
        self.run_id = f"prop-{new_run_id()}"
        self.prefix = coordination.run_prefix(self.run_id)
        self.workers = [self._worker() for _ in range(self.WORKERS)]
        self.valid: list[set[str]] = [set() for _ in range(self.WORKERS)]
        self.dead: list[RedisCoordinator] = []

    def _worker(self) -> RedisCoordinator:
        return RedisCoordinator(REDIS_URL, self.run_id, self.POOL, lease_ttl=60)

    def _in_grace(self) -> bool:
        ready = self.raw.hget(f"{self.prefix}:meta", "ready_at")
        seconds, micros = self.raw.time()
        return ready is not None and int(ready) > seconds * 1000 + micros // 1000

    @rule(w=st.integers(0, WORKERS - 1))
    def lease(self, w: int) -> None:
        try:
            charger_id = self.workers[w].lease_charger(f"user{w}")
        except CoordinatorUnavailable:
            assert self._in_grace()
            return
        if charger_id is None:
            # Exhausted means exhausted: nothing free and nothing expired left to reclaim.
            assert self.raw.zcard(f"{self.prefix}:pool:chargers:free") == 0
            assert self.raw.zcount(f"{self.prefix}:pool:chargers:expiry", "-inf", 0) == 0
        else:
            self.valid[w].add(charger_id)

    @rule(w=st.integers(0, WORKERS - 1), pick=st.integers(0, 10))
    def release(self, w: int, pick: int) -> None:
        held = sorted(self.workers[w].held())
        if held:
            charger_id = held[pick % len(held)]
            self.workers[w].release(charger_id)
            self.valid[w].discard(charger_id)
            assert charger_id not in self.workers[w].held()

    @rule(w=st.integers(0, WORKERS - 1))
    def renew_all(self, w: int) -> None:
        worker = self.workers[w]
        before = set(worker.held())
        lost = worker.renew_all().chargers
        if before == self.valid[w]:
            assert lost == [], "a holder that renewed in time must lose nothing"
        assert not set(lost) & set(worker.held())
        self.valid[w] = set(worker.held())

    @rule(w=st.integers(0, WORKERS - 1))
    def stall_past_ttl(self, w: int) -> None:
        force_expire(self.raw, self.workers[w])
        self.valid[w] = set()

    @rule(
        w=st.integers(0, WORKERS - 1),
        v=st.integers(0, WORKERS - 1),
        then=st.sampled_from(["renew_all", "release", "lease", "nothing"]),
        pick=st.integers(0, 10),
    )
    def stall_and_lose_leases_to(self, w: int, v: int, then: str, pick: int) -> None:
        """The dangerous interleaving, made likely: w stalls, v runs the pool dry, then w
        acts on what it still believes it holds."""
        self.stall_past_ttl(w)
        for _ in self.POOL:
            self.lease(v)
        if then == "renew_all":
            self.renew_all(w)
        elif then == "release":
            self.release(w, pick)
        elif then == "lease":
            self.lease(w)

    @rule(w=st.integers(0, WORKERS - 1))
    def die(self, w: int) -> None:
        self.dead.append(self.workers[w])  # never closed: its leases just stay
        self.workers[w] = self._worker()
        self.valid[w] = set()

    @precondition(lambda self: self.dead)
    @rule()
    def dead_leases_expire(self) -> None:
        for worker in self.dead:
            force_expire(self.raw, worker)

    @rule()
    def redis_loses_everything(self) -> None:
        coordination.delete_run(self.raw, self.run_id)
        self.valid = [set() for _ in range(self.WORKERS)]

    @rule()
    def grace_ends(self) -> None:
        if self.raw.exists(f"{self.prefix}:meta"):
            self.raw.hset(f"{self.prefix}:meta", "ready_at", 0)

    @invariant()
    def valid_holdings_never_overlap(self) -> None:
        for a, b in itertools.combinations(range(self.WORKERS), 2):
            assert not self.valid[a] & self.valid[b], (a, b, self.valid)

    @invariant()
    def valid_holdings_are_owned_in_redis(self) -> None:
        owners = self.raw.hgetall(f"{self.prefix}:pool:chargers:owner")
        for worker, valid in zip(self.workers, self.valid, strict=True):
            assert valid <= set(worker.held())
            for charger_id in valid:
                assert owners[charger_id.encode()].decode().startswith(worker.holder + " ")

    @invariant()
    def every_id_is_free_or_owned_exactly_once(self) -> None:
        if not self.raw.exists(f"{self.prefix}:meta"):
            return
        free = {m.decode() for m in self.raw.zrange(f"{self.prefix}:pool:chargers:free", 0, -1)}
        owned = {k.decode() for k in self.raw.hkeys(f"{self.prefix}:pool:chargers:owner")}
        expiry = {m.decode() for m in self.raw.zrange(f"{self.prefix}:pool:chargers:expiry", 0, -1)}
        assert not free & owned
        assert free | owned == set(self.POOL)
        assert expiry == owned

    def teardown(self) -> None:
        for worker in self.workers + self.dead:
            worker.client.close()
        coordination.delete_run(self.raw, self.run_id)
        self.raw.close()


def test_lease_logic_never_gives_one_id_to_two_holders() -> None:
    run_state_machine_as_test(
        LeaseMachine,
        settings=settings(
            max_examples=100,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# -- many processes --------------------------------------------------------------------------


def _churn(
    url: str, run_id: str, chargers: list[str], seed: int, operations: int, ids: int, queue: Any
) -> None:
    """One worker process: lease / release at random, then draw transaction ids."""
    import random

    rng = random.Random(seed)
    coordinator = RedisCoordinator(url, run_id, chargers, TOKENS, block_size=100)
    holding: dict[str, float] = {}
    intervals: list[tuple[str, float, float]] = []
    token_intervals: list[tuple[str, float, float]] = []
    leases = exhausted = 0
    started = time.perf_counter()
    for _ in range(operations):
        if rng.random() < 0.6:
            charger_id = coordinator.lease_charger(f"worker{seed}")
            if charger_id is None:
                exhausted += 1
            else:
                leases += 1
                holding[charger_id] = time.monotonic()  # after Redis granted it
        elif holding:
            charger_id = rng.choice(list(holding))
            intervals.append((charger_id, holding.pop(charger_id), time.monotonic()))
            coordinator.release(charger_id)  # after we stopped using it
        token = coordinator.acquire_token()
        if token is not None:
            token_intervals.append((token, time.monotonic(), time.monotonic()))
            coordinator.release_token(token)
    lease_seconds = time.perf_counter() - started
    started = time.perf_counter()
    transaction_ids = [coordinator.next_transaction_id() for _ in range(ids)]
    id_seconds = time.perf_counter() - started
    now = time.monotonic()
    intervals += [(charger_id, since, now) for charger_id, since in holding.items()]
    coordinator.close()
    queue.put(
        {
            "intervals": intervals,
            "token_intervals": token_intervals,
            "leases": leases,
            "exhausted": exhausted,
            "operations": operations,
            "lease_seconds": lease_seconds,
            "transaction_ids": transaction_ids,
            "id_seconds": id_seconds,
        }
    )


def _assert_disjoint(intervals: list[tuple[str, float, float]]) -> None:
    by_id: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for item, start, end in intervals:
        by_id[item].append((start, end))
    for item, spans in by_id.items():
        spans.sort()
        for (_, previous_end), (start, _) in itertools.pairwise(spans):
            assert start >= previous_end, f"{item} held twice at once"


def test_many_processes_never_share_a_charger_or_a_transaction_id(run_id: str) -> None:
    chargers = [f"mp_{n:03d}" for n in range(40)]
    processes, operations, ids = 4, 2500, 20_000
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(
            target=_churn, args=(REDIS_URL, run_id, chargers, seed, operations, ids, queue)
        )
        for seed in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        results = [queue.get(timeout=90) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
    _assert_disjoint([span for result in results for span in result["intervals"]])
    _assert_disjoint([span for result in results for span in result["token_intervals"]])
    leases = sum(result["leases"] for result in results)
    assert leases > 5 * len(chargers), "ids must have been reused many times"
    assert sum(result["exhausted"] for result in results) > 0, "the pool must have run dry"
    transaction_ids = [tid for result in results for tid in result["transaction_ids"]]
    assert len(transaction_ids) == processes * ids
    assert len(set(transaction_ids)) == len(transaction_ids)
    assert max(len(tid) for tid in transaction_ids) <= 36
    lease_rate = sum(r["operations"] for r in results) / max(r["lease_seconds"] for r in results)
    id_rate = len(transaction_ids) / max(r["id_seconds"] for r in results)
    print(
        f"\n{processes} processes: {lease_rate:,.0f} lease/release/token ops/s, "
        f"{id_rate:,.0f} transaction ids/s (block 100)"
    )


def _hold_then_sleep(url: str, run_id: str, queue: Any) -> None:
    coordinator = RedisCoordinator(url, run_id, CHARGERS, TOKENS, lease_ttl=2.0)
    queue.put([coordinator.lease_charger("doomed") for _ in range(3)])
    time.sleep(60)


def test_a_dead_workers_leases_are_reclaimed_after_the_ttl(run_id: str, coordinators: Any) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    doomed = context.Process(target=_hold_then_sleep, args=(REDIS_URL, run_id, queue))
    doomed.start()
    try:
        dead_ids = queue.get(timeout=30)
        granted = time.monotonic()
        survivor = coordinators(lease_ttl=2.0)
        mine = [survivor.lease_charger("survivor") for _ in range(2)]
        assert set(mine) == set(CHARGERS) - set(dead_ids)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.join(10)
        assert survivor.lease_charger("survivor") is None  # the TTL has not run out yet
        reclaimed: list[str] = []
        deadline = time.monotonic() + 10
        while len(reclaimed) < 3 and time.monotonic() < deadline:
            charger_id = survivor.lease_charger("survivor")
            if charger_id is None:
                time.sleep(0.05)
            else:
                reclaimed.append(charger_id)
        assert sorted(reclaimed) == sorted(dead_ids)
        assert time.monotonic() - granted >= 1.5
    finally:
        if doomed.is_alive():
            doomed.kill()
            doomed.join(10)


def test_a_live_workers_renewal_frees_a_dead_workers_expired_leases(
    raw: redis.Redis, coordinators: Any, run_id: str
) -> None:
    """Leasing reclaims expired leases lazily; renewals (every TTL / 3) sweep them too, so
    Redis shows a dead worker's ids as free once the TTL is over, not when the next user
    happens to lease (the campaign's "still leased 64 s later")."""
    dead, alive = coordinators(), coordinators()
    doomed = {dead.lease_charger("d1"), dead.lease_charger("d2")}
    mine = alive.lease_charger("a1")
    prefix = coordination.run_prefix(run_id)
    force_expire(raw, dead)  # it stopped renewing a TTL ago
    assert set(raw.hkeys(f"{prefix}:pool:chargers:owner")) == {
        charger.encode() for charger in (*doomed, mine)
    }
    assert alive.renew_all().chargers == []
    assert set(raw.hkeys(f"{prefix}:pool:chargers:owner")) == {mine.encode()}
    free = {charger.decode() for charger in raw.zrange(f"{prefix}:pool:chargers:free", 0, -1)}
    assert doomed <= free
    assert alive.held() == {mine: "a1"}


_BURST = """
from gevent import monkey
monkey.patch_all()
import gevent, json, sys
import redis
from loadgen.coordination import RedisCoordinator
users = 2000
coordinator = RedisCoordinator(sys.argv[1], sys.argv[2], [f"b{n}" for n in range(users)],
                               max_connections=20)
def user(n):
    charger_id = coordinator.lease_charger(f"user{n}")
    coordinator.next_transaction_id()
    coordinator.renew(charger_id)
    return charger_id
leased = [g.value for g in gevent.joinall([gevent.spawn(user, n) for n in range(users)])]
name = f"ocpp-loadgen:{coordinator.holder}"
clients = [c for c in redis.Redis.from_url(sys.argv[1]).client_list() if c["name"] == name]
print(json.dumps({"leased": len(set(leased) - {None}), "failures": coordinator.failures,
                  "connections": len(clients)}))
coordinator.close()
"""


def test_two_thousand_users_spawned_at_once_queue_for_a_bounded_redis_pool(run_id: str) -> None:
    """Every user leases when it spawns: with one connection each, a worker hit redis-py's
    "Too many connections" (and spent an open file per user). They share a few instead."""
    result = subprocess.run(
        [sys.executable, "-c", _BURST, REDIS_URL, run_id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary == {"leased": 2000, "failures": 0, "connections": summary["connections"]}
    assert 1 <= summary["connections"] <= 20, summary


_GREENLETS = """
from gevent import monkey
monkey.patch_all()
import gevent, json, random, sys
from loadgen.coordination import RedisCoordinator
coordinator = RedisCoordinator(sys.argv[1], sys.argv[2], [f"g{n}" for n in range(20)],
                               block_size=20)
holding, ids, exhausted = {}, [], [0]

def user(n):
    rng = random.Random(n)
    for _ in range(30):
        charger_id = coordinator.lease_charger(f"user{n}")
        if charger_id is None:
            exhausted[0] += 1
            gevent.sleep(0.001)
            continue
        assert charger_id not in holding, f"{charger_id} given to two greenlets"
        holding[charger_id] = n
        ids.append(coordinator.next_transaction_id())
        gevent.sleep(rng.random() * 0.002)  # Redis I/O of others happens meanwhile
        del holding[charger_id]
        coordinator.release(charger_id)

gevent.joinall([gevent.spawn(user, n) for n in range(50)], raise_error=True)
coordinator.close()
print(json.dumps({"ids": len(ids), "unique": len(set(ids)), "exhausted": exhausted[0]}))
"""


def test_greenlets_share_one_coordinator_safely(run_id: str) -> None:
    """The runtime is gevent: 50 users in one process, switching during Redis calls."""
    result = subprocess.run(
        [sys.executable, "-c", _GREENLETS, REDIS_URL, run_id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ids"] == summary["unique"] > 100
    assert summary["exhausted"] > 0  # 50 users, 20 ids: they really competed


# -- single behaviours -----------------------------------------------------------------------


def test_a_worker_that_stalled_learns_which_leases_it_lost(
    raw: redis.Redis, coordinators: Any, run_id: str
) -> None:
    stalled, other = coordinators(), coordinators()
    a, b, c = (stalled.lease_charger(f"u{n}") for n in range(3))
    force_expire(raw, stalled, {a, c})
    taken = [other.lease_charger("x") for _ in range(4)]
    assert {a, c} <= set(taken)  # reclaimed and given to the other worker
    assert stalled.renew(a) is False  # renewing does not take it back
    stalled.release(c)  # nor does releasing free the other worker's lease
    assert coordinators().lease_charger("third") is None
    owners = raw.hgetall(f"{coordination.run_prefix(run_id)}:pool:chargers:owner")
    assert owners[a.encode()].decode().startswith(other.holder)
    assert owners[c.encode()].decode().startswith(other.holder)
    assert stalled.renew_all().chargers == []  # a and c were already dropped; b is fine
    assert stalled.held() == {b: "u1"}
    assert other.renew_all().chargers == []


def test_an_own_expired_lease_stays_with_its_user(raw: redis.Redis, coordinators: Any) -> None:
    worker = coordinators(chargers=["x", "y"])
    assert worker.lease_charger("u1") == "x"
    force_expire(raw, worker)  # x expires while u1 still uses it
    assert worker.lease_charger("u2") == "y"
    assert worker.lease_charger("u3") is None  # x came back, but u1 still has it
    assert worker.held() == {"x": "u1", "y": "u2"}
    assert worker.renew("x") is True


def test_workers_with_different_fleets_are_refused(coordinators: Any) -> None:
    coordinators()
    with pytest.raises(ValueError, match="same fleet"):
        coordinators(chargers=[*CHARGERS, "extra"])
    with pytest.raises(ValueError, match="duplicate"):
        InProcessCoordinator(["a", "a"])


def test_an_idtoken_is_in_one_session_at_a_time(coordinators: Any) -> None:
    first, second = coordinators(), coordinators()
    tokens = [first.acquire_token(), second.acquire_token(), first.acquire_token()]
    assert sorted(tokens) == sorted(TOKENS)
    assert second.acquire_token() is None
    first.release_token(tokens[0])
    second.release_token(tokens[2])  # not second's: ignored
    assert second.acquire_token() == tokens[0]
    assert first.acquire_token() is None
    first.close()  # gives back tokens[2]
    assert second.acquire_token() == tokens[2]


def test_idtoken_groups_lease_only_their_own_tokens(
    raw: redis.Redis, coordinators: Any, run_id: str
) -> None:
    """A charger leases from its own group (its fleet table's or site's tokens); each group
    is leased one session at a time, in both implementations; the items carry the type."""
    groups = {
        "": ["04A2B3C4D5E6F7\tISO14443"],
        "site:jeju": ["KRLGNC00000001\teMAID", "12345678\tKeyCode"],
        "chargers:0": ["E004015012345678\tISO15693"],
    }
    now = [0.0]
    local = InProcessCoordinator(CHARGERS, groups, lease_ttl=10, clock=lambda: now[0])
    first, second = coordinators(tokens=groups), coordinators(tokens=groups)
    for a, b in ((local, local), (first, second)):
        site = {a.acquire_token("site:jeju"), b.acquire_token("site:jeju")}
        assert site == set(groups["site:jeju"])
        assert b.acquire_token("site:jeju") is None
        assert a.acquire_token("chargers:0") == groups["chargers:0"][0]
        assert b.acquire_token("chargers:0") is None
        assert b.acquire_token() == groups[""][0]
        with pytest.raises(ValueError, match="no idToken group"):
            a.acquire_token("site:nowhere")
        a.release_token(groups["chargers:0"][0])
        assert b.acquire_token("chargers:0") == groups["chargers:0"][0]
        assert a.renew_all().tokens == [] and b.renew_all().tokens == []
    assert raw.zcard(f"{first.prefix}:pool:tokens:site:jeju:expiry") == 2
    with pytest.raises(ValueError, match="same fleet and tokens"):
        coordinators(tokens={"": groups[""], "site:jeju": groups["site:jeju"]})
    with pytest.raises(ValueError, match="duplicate idTokens"):
        InProcessCoordinator(CHARGERS, {"": ["x"], "site:a": ["x"]})
    first.close()
    second.close()
    assert coordination.delete_run(raw, run_id) > 0
    assert not list(raw.scan_iter(match=f"{first.prefix}:*"))


def test_transaction_ids_are_unique_short_and_come_in_blocks(
    raw: redis.Redis, coordinators: Any, run_id: str
) -> None:
    workers = [coordinators(block_size=50) for _ in range(3)]
    ids = [worker.next_transaction_id() for _ in range(200) for worker in workers]
    assert len(set(ids)) == len(ids) == 600
    assert all(len(tid) <= 36 and tid.startswith(run_id[:8]) for tid in ids)
    # 200 ids per worker with blocks of 50 (the next fetched at half): 5 INCRBYs each
    assert int(raw.get(f"{coordination.run_prefix(run_id)}:txn")) == 3 * 5 * 50


def test_the_ledger_round_trips_as_msgpack(
    raw: redis.Redis, coordinators: Any, run_id: str
) -> None:
    worker = coordinators()
    ended_16 = Transaction("local-7", 1, 1, "token_a", 1_700_000_000.0, 1000.0, csms_id=42)
    ended_16.ended_at, ended_16.stop_wh, ended_16.messages = 1_700_000_600.5, 12_345.0, 7
    ended_16.acknowledged = 6
    started = Transaction("tx-9", 1, 1, "token_b", 1_700_000_000.0, 0.0)
    for seq_no in (0, 1, 2, 4):  # seqNo 3 dropped after CALLERRORs
        started.acknowledge({"seqNo": seq_no})
    entries = [
        LedgerEntry("charger_001", worker.next_transaction_id(), "2.0.1", 1.5, 61.25, 833.3, 5),
        LedgerEntry.from_transaction("charger_002", "1.6", ended_16),
        LedgerEntry.from_transaction("charger_003", "2.0.1", started, "start"),
    ]
    for entry in entries:
        worker.record_transaction(entry)
    assert worker.ledger_pending == 0
    assert entries[1].transaction_id == "42" and entries[1].local_id == "local-7"
    assert entries[1].energy_wh == 11_345.0
    assert (entries[1].acknowledged, entries[1].seq_nos) == (6, None)  # 1.6: a count
    assert entries[2].kind == "start" and entries[2].end is None
    assert (entries[2].acknowledged, entries[2].seq_nos) == (4, ((0, 2), (4, 4)))
    _, fields = raw.xrange(coordination.ledger_key(run_id))[0]
    raw_entry = msgpack.unpackb(fields[b"e"])
    assert raw_entry["energy_wh"] == 833.3 and raw_entry["entry_id"].startswith(worker.holder)
    assert [LedgerEntry.from_dict(d) for d in read_ledger(raw, run_id)] == entries
    assert LedgerSource(REDIS_URL, run_id).entries() == entries


def test_counters_track_connected_and_peak_across_workers(coordinators: Any) -> None:
    first, second = coordinators(), coordinators()
    for _ in range(3):
        first.station_connected()
    for _ in range(2):
        second.station_connected()
    assert first.counters() == Counters(5, 5)
    for _ in range(4):
        (first if _ % 2 else second).station_disconnected()
    assert second.counters() == Counters(1, 5)
    first.station_connected()
    assert first.counters() == Counters(2, 5)


# -- Redis going away in the middle of a run -------------------------------------------------


def _eventually(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except CoordinatorUnavailable:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_redis_stopped_and_restarted_mid_run(redis_server: RedisServer) -> None:
    run_id = new_run_id()
    options: dict[str, Any] = {"lease_ttl": 2.0, "block_size": 10, "retry_interval": 0.2}
    a = RedisCoordinator(redis_server.url, run_id, CHARGERS, TOKENS, **options)
    b = RedisCoordinator(redis_server.url, run_id, CHARGERS, TOKENS, **options)
    held_a = [a.lease_charger("a") for _ in range(2)]
    held_b = [b.lease_charger("b") for _ in range(2)]
    ids = [w.next_transaction_id() for _ in range(12) for w in (a, b)]
    a.station_connected()
    a.station_connected()
    b.station_connected()

    redis_server.stop()
    failures = a.failures
    with pytest.raises(CoordinatorUnavailable) as error:
        a.lease_charger("a")
    assert "\n" not in str(error.value) and "unavailable" in str(error.value)
    assert a.failures > failures
    with pytest.raises(CoordinatorUnavailable):
        a.acquire_token()
    with pytest.raises(CoordinatorUnavailable):
        a.renew_all()
    # Numbers already fetched still serve new transactions; then they fail visibly.
    with pytest.raises(CoordinatorUnavailable):
        for _ in range(30):
            ids.append(a.next_transaction_id())
    # Finished work is buffered, not lost, and does not raise.
    entry = LedgerEntry(held_a[0], ids[-1], "2.0.1", 10.0, 20.0, 5.0, 3)
    a.record_transaction(entry)
    a.station_disconnected()
    assert a.ledger_pending == 1 and not a.available
    assert a.failures >= failures + 5

    redis_server.start()  # back, and empty: it had no persistence
    assert _eventually(lambda: a.renew_all() is not None)
    assert a.renew_all().chargers == [] and b.renew_all().chargers == []  # re-claimed
    assert a.resets == 1 and b.resets == 1 and a.available
    assert set(a.held()) == set(held_a) and set(b.held()) == set(held_b)
    assert a.ledger_pending == 0
    assert [LedgerEntry.from_dict(d) for d in read_ledger(a.client, run_id)] == [entry]
    assert a.counters().connected == 2  # a: 2 - 1, b: 1, both re-counted after the loss

    # New leases wait one TTL (grace) so every live worker can re-claim first, then resume.
    with pytest.raises(CoordinatorUnavailable, match="resume"):
        b.lease_charger("b")
    fresh = _eventually(lambda: b.lease_charger("b"), timeout=10)
    assert fresh not in held_a + held_b
    # Numbering restarted in Redis, but under a new epoch: no id repeats.
    ids += [w.next_transaction_id() for _ in range(25) for w in (a, b)]
    assert len(set(ids)) == len(ids)
    assert all(len(tid) <= 36 for tid in ids)
    for worker in (a, b):
        worker.close()
