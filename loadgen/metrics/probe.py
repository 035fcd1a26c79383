"""The load generator's own health: how late its timers fire and the CPU it uses."""

from __future__ import annotations

import time

import gevent

from loadgen.metrics.collectors import Metrics


class LagProbe:
    """A greenlet that sleeps ``interval`` seconds at a time and records how late it woke
    (``schedule_lag_seconds{worker}``), and every ``cpu_window`` seconds the CPU the process
    used per second (``worker_cpu_ratio{worker}``).

    A late wake-up means the hub was busy elsewhere: every timer of every charger in this
    process is that late too. That is the load generator's saturation signal.
    """

    def __init__(self, metrics: Metrics, interval: float = 0.25, cpu_window: float = 2.0) -> None:
        self.metrics = metrics
        self.interval = interval
        self.cpu_window = cpu_window
        self.greenlet: gevent.Greenlet | None = None

    def start(self) -> LagProbe:
        if self.greenlet is None or self.greenlet.dead:
            self.greenlet = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(block=True, timeout=1)
            self.greenlet = None

    def _run(self) -> None:
        worker = self.metrics.worker
        lag = self.metrics.schedule_lag.labels(worker)
        cpu = self.metrics.worker_cpu.labels(worker)
        interval = self.interval
        monotonic, process_time = time.monotonic, time.process_time
        window_started, cpu_started = monotonic(), process_time()
        while True:
            started = monotonic()
            gevent.sleep(interval)
            now = monotonic()
            lag.observe(max(0.0, now - started - interval))
            if now - window_started >= self.cpu_window:
                used = process_time()
                cpu.set((used - cpu_started) / (now - window_started))
                window_started, cpu_started = now, used
