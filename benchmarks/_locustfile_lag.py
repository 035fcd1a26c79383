"""Benchmark-only locustfile: ``ChargerUser`` plus a timer-lag probe and a stepped load shape.

Run by ``benchmarks/locust_worker.py`` (not for load tests). Inside one plain headless
Locust process it

- ramps the users in steps (``--lag-steps``, e.g. ``0,1000,2500``) at Locust's
  ``--spawn-rate`` through a :class:`~locust.LoadTestShape` that moves to the next step
  only when the current one has been measured;
- per step waits until every user's station has booted (BootNotification answered), lets
  things settle for ``--lag-settle`` seconds and then holds for ``--lag-hold`` seconds;
- runs a probe greenlet that sleeps ``--lag-probe-ms`` (default 50 ms) in a loop and
  records how late it wakes: the hub's timer lag, which every station's timers share;
- per step records the lag during the spawn and during the hold, the process's CPU
  (``os.times``) and RSS, garbage-collector pauses (``gc.callbacks``), and the Heartbeat
  round trips from Locust's own statistics (the difference of the ``Heartbeat`` entry's
  response-time histogram between the start and the end of the hold);
- ``--lag-unpaced``: the generator as it was before its spawn path was tuned, to compare in
  the same run: each batch Locust makes started at once (no ``StartPacer``), no
  ``gc.freeze()`` while spawning (no ``CollectorFreeze``), an address lookup per connect;
- stops by itself after the last step, after the first step that misses
  ``--lag-limit-ms`` (unless ``--lag-keep-going``), or after ``--lag-budget`` seconds.

Progress goes to stderr; at ``quit`` the whole result is printed as one JSON line, the last
line of stdout (``_common.clients.run_worker`` reads it).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from array import array
from typing import Any

import gevent
import psutil
from _common.figures import latency_ms  # also puts the project root on sys.path
from locust import LoadTestShape, events
from locust.runners import LocalRunner
from locust.stats import calculate_response_time_percentile

from loadgen import link
from loadgen.locust import ChargerUser
from loadgen.pacing import CollectorFreeze

__all__ = ["ChargerUser", "Steps"]

perf = time.perf_counter


class Probe:
    """Everything measured in this process, and the steps' schedule."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.index = 0
        self.target = 0
        self.spawn_rate = 1.0
        self.done = False
        self.deadline = float("inf")
        self.shape_changed_at = 0.0  # when the shape last handed Locust a new target
        self.spawned_at = 0.0  # Locust's spawning_complete
        self.lags = array("d")  # how late each probe wake-up was, seconds
        self.boots = array("d")  # when each BootNotification was answered (perf_counter)
        self.boot_failures = 0
        self.connect_failures = 0
        self.gc_pauses: list[tuple[float, float, int]] = []  # (start, seconds, generation)
        self._gc_started = 0.0
        self.results: list[dict[str, Any]] = []
        self.process = psutil.Process()

    # -- hooks ---------------------------------------------------------------------------

    def on_request(self, request_type: str, name: str, exception: Any, **_: Any) -> None:
        if request_type == "OCPP" and name == "BootNotification":
            if exception is None:
                self.boots.append(perf())
            else:
                self.boot_failures += 1
        elif request_type == "WebSocket" and exception is not None:
            self.connect_failures += 1

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = perf()
        else:
            self.gc_pauses.append((self._gc_started, perf() - self._gc_started, info["generation"]))

    def run_probe(self, interval: float) -> None:
        lags = self.lags
        while True:
            began = perf()
            gevent.sleep(interval)
            lags.append(perf() - began - interval)

    # -- figures -------------------------------------------------------------------------

    def usage(self) -> dict[str, float]:
        times = os.times()
        return {
            "at": perf(),
            "cpu": times.user + times.system,
            "rss": self.process.memory_info().rss,
        }

    def gc_between(self, start: float, end: float) -> dict[str, Any]:
        pauses = [p for p in self.gc_pauses if start <= p[0] < end]
        by_generation = [0, 0, 0]
        for _, _, generation in pauses:
            by_generation[generation] += 1
        return {
            "collections": by_generation,
            "total_ms": sum(p[1] for p in pauses) * 1000,
            "max_ms": max((p[1] for p in pauses), default=0.0) * 1000,
            "gen2_ms": [round(p[1] * 1000, 1) for p in pauses if p[2] == 2],
        }


PROBE = Probe()


class Steps(LoadTestShape):
    """The current step's user count at Locust's ``--spawn-rate``; None ends the run."""

    use_common_options = True  # we read --spawn-rate

    _last: int | None = None

    def tick(self) -> tuple[int, float] | None:
        if PROBE.done or perf() > PROBE.deadline:
            return None
        if PROBE.target != self._last:
            self._last = PROBE.target
            PROBE.shape_changed_at = perf()
        return PROBE.target, PROBE.spawn_rate


def heartbeat_histogram(environment: Any) -> tuple[dict[int, int], int, int]:
    entry = environment.runner.stats.get("Heartbeat", "OCPP")
    return dict(entry.response_times), entry.num_requests, entry.num_failures


def histogram_ms(before: dict[int, int], after: dict[int, int]) -> dict[str, float]:
    diff = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
    count = sum(diff.values())
    if not count:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    figures = {
        f"p{q}": float(calculate_response_time_percentile(diff, count, q / 100))
        for q in (50, 95, 99)
    }
    return figures | {"max": float(max(diff))}


def finite(value: Any) -> Any:
    """``value`` with NaN floats as None: the result is read with orjson (no NaN in JSON)."""
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def progress(text: str) -> None:
    sys.stderr.write(f"   [locust] {text}\n")
    sys.stderr.flush()


def run_steps(environment: Any, options: Any) -> None:
    """The controller: each step's spawn, settle and hold; then the end of the run."""
    runner = environment.runner
    probe = PROBE
    hold, settle = options.lag_hold, options.lag_settle
    limit = options.lag_limit_ms
    previous = 0
    for index, target in enumerate(probe.steps):
        probe.index = index
        step_began = perf()
        boots_before = len(probe.boots)
        lags_before = len(probe.lags)
        usage_before = probe.usage()
        probe.target = target
        expected = boots_before + max(0, target - previous)
        wait = 30 + 3 * abs(target - previous) / probe.spawn_rate
        # The shape hands Locust the new target within its 1 s tick.
        while perf() - step_began < wait and (
            probe.shape_changed_at < step_began
            or runner.user_count != target
            or runner.state == "spawning"
            or len(probe.boots) < expected
        ):
            gevent.sleep(0.05)
        booted_at = probe.boots[-1] if len(probe.boots) > boots_before else perf()
        spawn_end = perf()
        usage_spawned = probe.usage()
        new_boots = len(probe.boots) - boots_before
        started = max(probe.shape_changed_at, step_began)
        spawn: dict[str, Any] = {
            "window": [step_began, spawn_end],
            "users": target - previous,
            "booted": new_boots,
            "seconds": booted_at - started if new_boots else 0.0,
            "locust_spawned_seconds": max(0.0, probe.spawned_at - started),
            "lag_ms": latency_ms(probe.lags[lags_before:]),
            "cpu_cores": (usage_spawned["cpu"] - usage_before["cpu"])
            / max(1e-9, spawn_end - step_began),
            "gc": probe.gc_between(step_began, spawn_end),
        }
        if new_boots:
            spawn["rate"] = new_boots / max(1e-9, booted_at - started)
            times = sorted(probe.boots[boots_before:])
            lo, hi = times[int(0.1 * (new_boots - 1))], times[int(0.9 * (new_boots - 1))]
            spawn["steady_rate"] = 0.8 * (new_boots - 1) / max(1e-9, hi - lo)
        if target > previous:
            progress(
                f"step {index}: {new_boots:,}/{target - previous:,} new chargers booted in "
                f"{spawn['seconds']:.1f} s ({spawn.get('rate', 0):,.0f}/s); lag p99 during "
                f"the spawn {spawn['lag_ms']['p99']:.1f} ms"
            )
        gevent.sleep(settle)
        before = probe.usage()
        lag_from = len(probe.lags)
        hb_before, hb_count, hb_failed = heartbeat_histogram(environment)
        gevent.sleep(hold)
        after = probe.usage()
        hb_after, hb_count_after, hb_failed_after = heartbeat_histogram(environment)
        lag = latency_ms(probe.lags[lag_from:])
        lag["samples"] = len(probe.lags) - lag_from
        seconds = after["at"] - before["at"]
        result = {
            "step": index,
            "users": runner.user_count,
            "target": target,
            "booted_total": len(probe.boots),
            "boot_failures": probe.boot_failures,
            "connect_failures": probe.connect_failures,
            "spawn": spawn,
            "hold": {
                "window": [before["at"], after["at"]],
                "seconds": seconds,
                "lag_ms": lag,
                "cpu_cores": (after["cpu"] - before["cpu"]) / max(1e-9, seconds),
                "rss": after["rss"],
                "heartbeats": hb_count_after - hb_count,
                "heartbeat_failures": hb_failed_after - hb_failed,
                "heartbeat_ms": histogram_ms(hb_before, hb_after),
                "gc": probe.gc_between(before["at"], after["at"]),
                "greenlets": len(runner.user_greenlets),
            },
        }
        probe.results.append(result)
        progress(
            f"step {index}: {runner.user_count:,} users held {seconds:.0f} s: lag p99 "
            f"{lag['p99']:.1f} ms (max {lag['max']:.1f}), {result['hold']['cpu_cores']:.2f} "
            f"cores, RSS {after['rss'] / 2**20:.0f} MB, "
            f"{result['hold']['heartbeats']:,} heartbeats"
        )
        previous = target
        if lag["p99"] >= limit and not options.lag_keep_going:
            progress(f"lag p99 {lag['p99']:.1f} ms >= {limit:g} ms: stopping the ramp here")
            break
        if len(probe.boots) < target and not options.lag_keep_going:
            progress(f"only {len(probe.boots):,} of {target:,} chargers booted: stopping here")
            break
    probe.done = True


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    group = parser.add_argument_group("timer-lag benchmark (benchmarks/_locustfile_lag.py)")
    group.add_argument("--lag-steps", default="0,1000", help="user counts, comma separated")
    group.add_argument("--lag-hold", type=float, default=20.0, help="seconds held per step")
    group.add_argument("--lag-settle", type=float, default=3.0, help="seconds before a hold")
    group.add_argument("--lag-probe-ms", type=float, default=50.0, help="probe's sleep, ms")
    group.add_argument("--lag-limit-ms", type=float, default=100.0, help="p99 lag target")
    group.add_argument("--lag-keep-going", action="store_true", help="don't stop at a miss")
    group.add_argument("--lag-budget", type=float, default=900.0, help="seconds, whole run")
    group.add_argument(
        "--lag-unpaced", action="store_true", help="no start pacing, gc.freeze, address cache"
    )


def unpaced(environment: Any) -> None:
    """The spawn path as it was: batches start at once, the collector sees every station,
    every connect looks the CSMS's address up."""
    context = environment.ocpp
    context.pacer.delay = lambda ticket: 0.0
    context.collector = CollectorFreeze(perf, freeze=lambda: None, unfreeze=lambda: None)
    link.ADDRESSES.ttl = 0.0


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is None or type(environment.runner) is not LocalRunner:
        return  # one plain local process only
    PROBE.steps = [int(n) for n in options.lag_steps.split(",") if n.strip()]
    PROBE.spawn_rate = float(options.spawn_rate or 1)
    PROBE.deadline = perf() + options.lag_budget
    environment.events.request.add_listener(PROBE.on_request)
    environment.events.spawning_complete.add_listener(
        lambda **_: setattr(PROBE, "spawned_at", perf())
    )
    gc.callbacks.append(PROBE.on_gc)
    if options.lag_unpaced:
        unpaced(environment)
    gevent.spawn(PROBE.run_probe, options.lag_probe_ms / 1000)
    gevent.spawn(run_steps, environment, options)


@events.quit.add_listener
def _on_quit(**_: Any) -> None:
    if not PROBE.steps:
        return
    out = {"steps": PROBE.results, "completed": PROBE.done, "spawn_rate": PROBE.spawn_rate}
    sys.stdout.write(json.dumps(finite(out)) + "\n")
    sys.stdout.flush()
