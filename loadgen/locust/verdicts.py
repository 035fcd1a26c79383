"""What a run's exit code says: ``--check-slo``'s verdict, ``--junit``, recovered connects.

- **Recovered connects.** Each failed connection attempt is a row of Locust's failure
  table (``WebSocket connect``), and Locust exits 1 on any failure. A station whose failed
  attempts were followed by a connection recovered: those failures alone do not fail the
  run (:class:`ConnectRetries` counts them per station; the exit code becomes 0 when they
  are all of Locust's failures). Attempts still failing when the run ended, or after
  which a station gave up, stay failures.
- **--check-slo.** A plain run is judged at its end by the SLOs
  (:func:`loadgen.verdict.judge_run`) over the traffic from its start until Locust began
  to stop it; one line per SLO, and the verdict sets the exit code: 0 when every SLO held,
  1 otherwise. Locust's failure count does not decide then; the SLOs do (failed connects
  count against ``--slo-connect-failure-ratio``). A master judges the merged metrics of
  its workers, as they last reported them (every 3 s).
- **--junit FILE.** The verdicts as JUnit XML: each SLO of ``--check-slo``, or each
  capacity answer of ``--capacity-search``.

Reconciliation still sets 1 on a loss, whatever the verdict (it runs after it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadgen import junit
from loadgen.capacity.judgement import with_count_percentiles
from loadgen.capacity.measure import measure
from loadgen.verdict import RunVerdict, judge_run

log = logging.getLogger(__name__)

#: a worker's report: connect failures of its stations that connected afterwards
RECOVERED_KEY = "ocpp_recovered_connects"


class ConnectRetries:
    """Failed connection attempts per station until it connects: then they recovered.

    Fed with the station runners' events (``retry`` / ``gave_up`` say whether a connection
    attempt failed, ``connected`` that one succeeded).
    """

    def __init__(self) -> None:
        self.recovered = 0
        self._pending: dict[str, int] = {}

    def runner_event(self, kind: str, detail: Mapping[str, Any]) -> None:
        charger_id = str(detail.get("charger_id"))
        if kind == "retry" and detail.get("connect_failed"):
            self._pending[charger_id] = self._pending.get(charger_id, 0) + 1
        elif kind == "connected":
            self.recovered += self._pending.pop(charger_id, 0)
        elif kind == "gave_up":
            self._pending.pop(charger_id, None)  # never recovered: they stay failures

    def drain(self) -> int:
        """The recovered attempts since the last drain (a worker sends them to its master)."""
        recovered, self.recovered = self.recovered, 0
        return recovered


def ocpp_latencies(environment: Environment) -> dict[str, Any]:
    """Locust's response-time counts per OCPP action (a master's: every worker's)."""
    return {
        name: entry.response_times
        for (name, method), entry in environment.stats.entries.items()
        if method == "OCPP"
    }


def install(context: Any, environment: Environment, say: Callable[[str], None]) -> None:
    """Hook the verdicts into ``environment``'s events (every process: the recovered
    connects; the master or the single process: the rest). ``say`` prints after Locust's
    summary."""
    runner, events = environment.runner, environment.events
    retries: ConnectRetries = context.connect_retries
    if isinstance(runner, WorkerRunner):

        def report(client_id: str, data: dict[str, Any], **_: Any) -> None:
            data[RECOVERED_KEY] = retries.drain()

        events.report_to_master.add_listener(report)
        return
    total = [0]  # a master: what its workers reported

    def recovered() -> int:
        return total[0] + retries.recovered

    if isinstance(runner, MasterRunner):

        def on_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
            count = data.get(RECOVERED_KEY)
            if isinstance(count, int) and count > 0:
                total[0] += count

        events.worker_report.add_listener(on_report)

    settings = context.settings
    judging = settings.slo is not None or bool(settings.junit)
    run: dict[str, Any] = {}

    def view() -> dict[str, Any]:
        return {
            "merged": context.merged.merged(),
            "latency": {a: dict(c) for a, c in ocpp_latencies(environment).items()},
            "at": time.monotonic(),
            "chargers": getattr(runner, "target_user_count", 0) or runner.user_count,
        }

    @events.test_start.add_listener
    def _start(**_: Any) -> None:
        total[0] = 0
        retries.recovered = 0
        run.clear()
        if judging:
            run["start"] = view()

    @events.test_stopping.add_listener
    def _stopping(**_: Any) -> None:
        if "start" in run:
            run["end"] = view()  # the run's traffic: not its users' goodbyes

    def conclude() -> None:
        """Judge the run once: when it stops, or when Locust quits while it still runs
        (Ctrl-C, SIGTERM: Locust takes its exit code before it stops the users)."""
        start = run.pop("start", None)
        if start is None:
            return
        end = run.pop("end", None) or view()
        seconds = max(0.0, end["at"] - start["at"])
        cases: list[junit.Case] = []
        if settings.slo is not None:
            verdict = _judge(start, end, seconds, settings.slo, runner)
            for line in verdict.lines():
                say(line)
            environment.process_exit_code = 0 if verdict.ok else 1
            cases = junit.slo_cases(verdict.checks, verdict.problems)
        shape = context.shape
        if shape is not None and settings.capacity is not None:
            cases = junit.capacity_cases(shape.result, settings.capacity, shape.done)
        if settings.junit:
            try:
                junit.write(settings.junit, cases, seconds)
            except OSError as exc:
                say(f"loadgen: could not write --junit {settings.junit}: {exc}")
                environment.process_exit_code = 1
            else:
                say(f"junit: {settings.junit}")

    events.test_stop.add_listener(lambda **_: conclude())

    @events.quitting.add_listener
    def _quitting(**_: Any) -> None:
        conclude()
        count = recovered()
        if count <= 0:
            return
        say(
            f"connects: {count} failed attempts were retried until the station connected "
            "(in Locust's failure table, not in the exit code; --check-slo judges them by "
            "--slo-connect-failure-ratio)"
        )
        if environment.process_exit_code is not None or runner.exceptions:
            return  # a verdict decided, or something else failed the run
        entry = environment.stats.entries.get(("connect", "WebSocket"))
        connect_failures = entry.num_failures if entry is not None else 0
        failures = environment.stats.total.num_failures
        if failures - connect_failures == 0 and connect_failures <= count:
            environment.process_exit_code = 0


def _judge(
    start: Mapping[str, Any],
    end: Mapping[str, Any],
    seconds: float,
    config: Any,
    runner: Any,
) -> RunVerdict:
    measurement = measure(start["merged"], end["merged"], chargers=end["chargers"], seconds=seconds)
    measurement = with_count_percentiles(measurement, start["latency"], end["latency"])
    problems = []
    if runner.exceptions:
        count = sum(row.get("count", 1) for row in runner.exceptions.values())
        problems.append(f"{count} exceptions in the load generator (see Locust's table)")
    return judge_run(measurement, config, problems)
