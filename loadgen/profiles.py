"""Charging profiles: what each simulated station does between boots (pure decisions).

- ``idle``: boot, heartbeats, status; nothing else.
- ``sessions``: EVs arrive (exponential inter-arrival times), authorize, charge with meter
  values, leave after an exponential stay (or when full), and the next one comes.
- ``remote``: wait for the CSMS's commands (RequestStart/StopTransaction ...).
- ``mixed``: each station draws one of the above by weight
  (``mixed`` = idle 40, sessions 50, remote 10; or ``mixed:idle=1,sessions=3``).

All times are simulated seconds (``--time-scale`` shrinks them). The decisions are pure
functions of a ``random.Random``, so tests are deterministic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from loadgen.physics import EV

PROFILES = ("idle", "sessions", "remote")
DEFAULT_MIX = {"idle": 40, "sessions": 50, "remote": 10}


class ProfileError(ValueError):
    """A profile specification that cannot be used."""


@dataclass(frozen=True)
class SessionPlan:
    """How EVs come and go at a station running the ``sessions`` profile."""

    mean_interarrival_s: float = 600.0
    mean_stay_s: float = 1800.0
    min_stay_s: float = 60.0
    authorize: bool = True

    def next_arrival(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean_interarrival_s)

    def next_stay(self, rng: random.Random) -> float:
        return max(self.min_stay_s, rng.expovariate(1.0 / self.mean_stay_s))

    @staticmethod
    def new_ev(rng: random.Random) -> EV:
        """A car from a plausible mix: 40-100 kWh, arriving at 10-60 %, 50-250 kW DC."""
        return EV(
            capacity_wh=rng.choice((40_000, 58_000, 77_000, 100_000)),
            soc=rng.uniform(0.10, 0.60),
            target_soc=rng.choice((0.8, 0.9, 1.0)),
            max_power_w=rng.choice((50_000, 100_000, 150_000, 250_000)),
        )


@dataclass(frozen=True)
class ProfileMix:
    weights: dict[str, float]

    def choose(self, rng: random.Random) -> str:
        names = list(self.weights)
        if len(names) == 1:
            return names[0]  # no draw (once per charger started)
        return rng.choices(names, weights=[self.weights[n] for n in names])[0]


def parse_profile(text: str) -> ProfileMix:
    """``idle`` | ``sessions`` | ``remote`` | ``mixed`` | ``mixed:idle=1,sessions=3,...``."""
    text = text.strip()
    if text in PROFILES:
        return ProfileMix({text: 1.0})
    if text == "mixed":
        return ProfileMix(dict(DEFAULT_MIX))
    if text.startswith("mixed:"):
        weights: dict[str, float] = {}
        for part in text[len("mixed:") :].split(","):
            name, _, weight = part.partition("=")
            name = name.strip()
            if name not in PROFILES:
                raise ProfileError(
                    f"unknown profile {name!r} in {text!r} (known: {', '.join(PROFILES)})"
                )
            try:
                weights[name] = float(weight)
            except ValueError:
                raise ProfileError(f"weight of {name!r} in {text!r} is not a number") from None
            if weights[name] < 0:
                raise ProfileError(f"weight of {name!r} in {text!r} is negative")
        if not weights or sum(weights.values()) <= 0:
            raise ProfileError(f"{text!r} gives no profile a positive weight")
        return ProfileMix(weights)
    raise ProfileError(
        f"unknown profile {text!r} (idle, sessions, remote, mixed, "
        "mixed:idle=1,sessions=3,remote=1)"
    )
