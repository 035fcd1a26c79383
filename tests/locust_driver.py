"""Locust as a library (its Environment API), in a process of its own, driven over stdin.

``python -m tests.locust_driver <locust options>`` builds the options with Locust's own
parser (after :mod:`loadgen.locust` registered its arguments), makes an
``Environment(user_classes=[ChargerUser], ...)`` with a local runner and calls
:func:`loadgen.locust.plugin.setup` (Locust fires ``init`` only for environments its own
``main`` makes). Then it answers commands, one JSON object per line on stdin; each answer is
one line on stdout starting with ``@@ ``:

- ``{"cmd": "start", "users": N, "rate": R}``: ``runner.start(N, R)`` (spawns, or respawns
  users that stopped, up to N)
- ``{"cmd": "stats"}``: Locust's statistics, errors, user count and exceptions
- ``{"cmd": "quit"}``: ``runner.quit()``, then the statistics and, with the in-process
  coordinator, its ledger; the coordinator is closed and the process ends

Importing Locust monkey-patches the standard library (gevent), which is why this is not
done inside the pytest process: tests/test_link.py checks nothing patched it there.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import gevent
from locust.argument_parser import get_parser
from locust.env import Environment
from locust.log import setup_logging

from loadgen import coordination
from loadgen.locust import ChargerUser, plugin


def stats(environment: Environment) -> dict[str, Any]:
    runner = environment.runner
    assert runner is not None
    return {
        "requests": [
            {
                "type": entry.method,
                "name": entry.name,
                "count": entry.num_requests,
                "failures": entry.num_failures,
            }
            for entry in environment.stats.entries.values()
        ],
        "errors": [
            {"type": error.method, "name": error.name, "error": str(error.error), "count": n}
            for error in environment.stats.errors.values()
            if (n := error.occurrences)
        ],
        "users": runner.user_count,
        "exceptions": [row["msg"] for row in runner.exceptions.values()],
    }


def answer(data: dict[str, Any]) -> None:
    sys.stdout.write("@@ " + json.dumps(data) + "\n")
    sys.stdout.flush()


def make_environment(argv: list[str]) -> tuple[Environment, Any, plugin.RunContext]:
    """Locust's Environment with a local runner and our plugin set up, as ``locust`` would
    make them from ``argv`` (also for tests that drive a ChargerUser by hand)."""
    options = get_parser().parse_args(argv)
    environment = Environment(user_classes=[ChargerUser], host=options.host, parsed_options=options)
    runner = environment.create_local_runner()
    context = plugin.setup(environment, options)
    assert environment.ocpp is context  # type: ignore[attr-defined]
    return environment, runner, context


def main(argv: list[str]) -> None:
    setup_logging("INFO")  # to stderr
    environment, runner, context = make_environment(argv)
    coordinator = context.coordinator
    assert coordinator is not None
    answer({"run_id": coordinator.run_id})
    read_line = gevent.get_hub().threadpool.apply  # stdin in a thread: users keep running
    while True:
        line = read_line(sys.stdin.readline)
        if not line:
            command: dict[str, Any] = {"cmd": "quit"}
        else:
            command = json.loads(line)
        if command["cmd"] == "start":
            runner.start(command["users"], command["rate"])
            answer({"ok": True})
        elif command["cmd"] == "stats":
            answer(stats(environment))
        elif command["cmd"] == "quit":
            runner.quit()
            result = stats(environment)
            if isinstance(coordinator, coordination.InProcessCoordinator):
                result["ledger"] = [entry.to_dict() for entry in coordinator.ledger()]
                result["held_after_quit"] = len(coordinator.held())
            coordinator.close()
            answer(result)
            return
        else:
            answer({"error": f"unknown command {command['cmd']!r}"})


if __name__ == "__main__":
    main(sys.argv[1:])
