"""EV battery and energy meter, on an injected clock (pure code).

The model is the one the seed's scenario 2 describes: the power drawn is the smaller of the
charger's rating and what the EV accepts; the EV accepts its maximum up to 80 % state of
charge and tapers linearly above it, down to a trickle at 100 %. Energy is integrated over
simulated time; the EVSE's register (Wh) only ever grows, across sessions and reconnects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

#: the state of charge above which an EV tapers (seed scenario 2)
TAPER_START_SOC = 0.80
#: the fraction of its maximum an EV still draws at 100 % SoC
TAPER_FLOOR = 0.05
#: the longest step the integrator takes: the taper is not linear in time
_MAX_STEP_S = 10.0


class Clock(Protocol):
    """Simulated seconds since the epoch. Runtime clocks scale real time; tests fake it."""

    def now(self) -> float: ...


class FakeClock:
    """A clock that moves only when told to: for tests."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds
        return self._now

    def set(self, when: float) -> None:
        if when < self._now:
            raise ValueError("a clock does not go backwards")
        self._now = when


class WallClock:
    """The real time (epoch seconds): what the timestamps a station sends are read from."""

    def now(self) -> float:
        return time.time()


class ScaledClock:
    """Simulated time that runs ``time_scale`` times faster from the moment it is made.

    ``time_scale=60`` turns a one-hour charging session into one minute: the waits between
    events (sessions, meter values, the EV's charging) shrink. The timestamps the stations
    send do not: they are read from :attr:`wall`, the real time, so a CSMS never sees a time
    in the future.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        #: the clock for timestamps on the wire (a :class:`~loadgen.station.Station` reads it)
        self.wall: Clock = WallClock()
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def now(self) -> float:
        return self._wall0 + (time.monotonic() - self._mono0) * self.time_scale

    def real_seconds(self, simulated: float) -> float:
        """How long ``simulated`` seconds take in real time."""
        return simulated / self.time_scale

    def from_wall(self, wall: float) -> float:
        """This clock's time when the wall clock shows ``wall``: a CSMS's expiry or
        download time, which is real, comes due after the real time it names."""
        return self.now() + (wall - time.time()) * self.time_scale


@dataclass
class EV:
    """An electric vehicle's battery, as far as charging is concerned."""

    capacity_wh: float = 60_000.0
    soc: float = 0.20  # state of charge, 0..1
    target_soc: float = 1.0  # the driver leaves when this is reached
    max_power_w: float = 150_000.0

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0 or self.max_power_w <= 0:
            raise ValueError("capacity and maximum power must be positive")
        if not 0.0 <= self.soc <= 1.0 or not 0.0 < self.target_soc <= 1.0:
            raise ValueError("state of charge must lie in [0, 1]")

    @property
    def full(self) -> bool:
        return self.soc >= self.target_soc - 1e-9

    def acceptance_w(self) -> float:
        """The power the EV accepts at its current state of charge."""
        if self.full:
            return 0.0
        if self.soc <= TAPER_START_SOC:
            return self.max_power_w
        above = (self.soc - TAPER_START_SOC) / (1.0 - TAPER_START_SOC)
        return self.max_power_w * (1.0 - (1.0 - TAPER_FLOOR) * above)


class EnergyRegister:
    """An EVSE's cumulative import register in Wh: it never goes backwards."""

    def __init__(self, wh: float = 0.0) -> None:
        if wh < 0:
            raise ValueError("a register starts at or above zero")
        self._wh = float(wh)

    @property
    def wh(self) -> float:
        return self._wh

    def add(self, wh: float) -> float:
        if wh < 0:
            raise ValueError("energy delivered cannot be negative")
        self._wh += wh
        return self._wh


class ChargingPhysics:
    """One EV on one EVSE: power and energy as simulated time passes.

    ``advance(now)`` integrates from the last call; ``power_w`` is the power at the last
    integration point. The charger's limit may change (a charging profile, a derating).
    """

    def __init__(
        self, ev: EV, register: EnergyRegister, charger_limit_w: float, start: float
    ) -> None:
        self.ev = ev
        self.register = register
        self.charger_limit_w = charger_limit_w
        self.suspended = False  # the EVSE withholds power (e.g. SuspendedEVSE)
        self._at = start
        self.power_w = self._power()

    def _power(self) -> float:
        if self.suspended:
            return 0.0
        return max(0.0, min(self.charger_limit_w, self.ev.acceptance_w()))

    def set_limit(self, limit_w: float, at: float) -> None:
        """Change the charger's limit from ``at`` on (a charging profile's limit in force):
        the energy before ``at`` is integrated at the old one."""
        self.advance(at)
        self.charger_limit_w = limit_w
        self.power_w = self._power()

    def advance(self, now: float) -> float:
        """Integrate up to ``now``; returns the Wh delivered since the last call."""
        delivered = 0.0
        remaining = now - self._at
        if remaining < 0:
            return 0.0  # an out-of-order call: time does not go backwards here
        while remaining > 1e-9:
            step = min(remaining, _MAX_STEP_S)
            power = self._power()
            if power <= 0:
                break
            wh = power * step / 3600.0
            room = (self.ev.target_soc - self.ev.soc) * self.ev.capacity_wh
            if wh >= room:
                wh = max(room, 0.0)
                self.ev.soc = self.ev.target_soc
            else:
                self.ev.soc += wh / self.ev.capacity_wh
            delivered += wh
            remaining -= step
        self._at = now
        self.register.add(delivered)
        self.power_w = self._power()
        return delivered
