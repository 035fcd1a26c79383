"""How the master's run id reaches a worker, replayed deterministically: Locust's real
master and worker runners in one process (its Environment API), talking over 127.0.0.1.

``python -m tests.locust_run_id_driver CASE <locust options>`` prints one line starting
with ``@@ `` (a JSON object) and ends:

- ``early``: the master's messages arrive after the worker's plugin listens
  (``plugin._EarlyMessages``) and before it can handle them; answers what the handlers
  got, in order, once handed over (``kept``) and after (``later``)
- ``before-init``: the master's run id arrives while Locust has no listener for it (a
  worker acknowledged, and not yet set up: Locust drops the message), then the worker's
  plugin is set up; answers the master's run id and the worker's, if it got one

Each case waits for a probe message the master sends after the others: the worker has
then handled them (one socket, in order), so nothing here depends on timing. Like
tests/locust_driver.py, a process of its own because importing Locust patches the standard
library.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import gevent.event
from locust.argument_parser import get_parser
from locust.env import Environment
from locust.log import setup_logging

from loadgen.locust import ChargerUser, plugin

PROBE = "test_probe"


def answer(data: dict[str, Any]) -> None:
    sys.stdout.write("@@ " + json.dumps(data) + "\n")
    sys.stdout.flush()


class Pair:
    """A master runner and one worker runner connected to it."""

    def __init__(self, options: Any, port: int) -> None:
        self.master_env = Environment(user_classes=[ChargerUser], parsed_options=options)
        self.master = self.master_env.create_master_runner("127.0.0.1", port)
        self.worker_env = Environment(user_classes=[ChargerUser], parsed_options=options)
        # returns once the master acknowledged it (its greenlets run meanwhile)
        self.worker = self.worker_env.create_worker_runner("127.0.0.1", port)
        self._probed = gevent.event.Event()
        self.worker.register_message(PROBE, lambda msg, **_: self._probed.set())

    def send(self, name: str, data: Any = None) -> None:
        self.master.send_message(name, data, client_id=self.worker.client_id)

    def handled(self) -> None:
        """Wait until the worker has handled everything the master sent so far."""
        self._probed.clear()
        self.send(PROBE)
        if not self._probed.wait(10):
            raise SystemExit("the worker never got the probe")


def early(pair: Pair) -> dict[str, Any]:
    got: list[list[Any]] = []
    early = plugin._EarlyMessages(pair.worker)
    pair.send(plugin.RUN_MESSAGE, "run-1")
    pair.send(plugin.RETRY_MESSAGE, 3)
    pair.handled()
    early.deliver(plugin.RUN_MESSAGE, lambda data: got.append(["run", data]))
    early.deliver(plugin.RETRY_MESSAGE, lambda data: got.append(["retry", data]))
    kept = list(got)
    pair.send(plugin.RUN_MESSAGE, "run-2")
    pair.handled()
    return {"kept": kept, "later": got[len(kept) :]}


def before_init(pair: Pair, options: Any) -> dict[str, Any]:
    master = plugin.setup(pair.master_env, options)
    pair.master_env.events.test_start.fire(environment=pair.master_env)  # sends the run id
    pair.handled()
    worker = plugin.setup(pair.worker_env, options)
    worker.ready.wait(10)
    assert master.coordinator is not None
    result = {
        "master_run": master.coordinator.run_id,
        "worker_run": worker.coordinator.run_id if worker.coordinator else None,
    }
    for context in (master, worker):
        if context.coordinator is not None:
            context.coordinator.close()
    return result


def main(argv: list[str]) -> None:
    setup_logging("INFO")  # to stderr
    case, port, locust_args = argv[0], int(argv[1]), argv[2:]
    options = get_parser().parse_args(locust_args)
    pair = Pair(options, port)
    answer(early(pair) if case == "early" else before_init(pair, options))
    pair.worker.quit()
    pair.master.quit()


if __name__ == "__main__":
    main(sys.argv[1:])
