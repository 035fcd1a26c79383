"""The capacity search's configuration: the ramp's step, the SLOs and guards, parsed from
the command line's words."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: what ``--capacity-search`` searches; the bare flag means "both"
SEARCH_MODES = ("both", "chargers", "connect-rate")

_ACTION = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")
_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
_FACTOR = re.compile(rf"[xX×*]\s*({_NUMBER})\Z")  # noqa: RUF001
_INCREMENT = re.compile(r"\+\s*([0-9]+)\Z")


@dataclass(frozen=True)
class Step:
    """How the ramp grows: ``factor`` (``x1.5``: times 1.5) or ``increment`` (``+100``)."""

    kind: str  # "factor" | "increment"
    value: float

    def __post_init__(self) -> None:
        if self.kind == "factor":
            if not (math.isfinite(self.value) and self.value > 1):
                raise ValueError(f"a step factor must be more than 1, not {self.value:g}")
        elif self.kind == "increment":
            if self.value != int(self.value) or self.value < 1:
                raise ValueError(f"a step increment must be a whole number >= 1, not {self.value}")
        else:
            raise ValueError(f"a step is a 'factor' or an 'increment', not {self.kind!r}")

    @classmethod
    def parse(cls, text: str) -> Step:
        """``x1.5`` (also ``X``, ``*`` or the multiplication sign) or ``+100``; anything
        else is a ValueError."""
        stripped = str(text).strip()
        if match := _FACTOR.match(stripped):
            return cls("factor", float(match.group(1)))
        if match := _INCREMENT.match(stripped):
            return cls("increment", int(match.group(1)))
        raise ValueError(
            f"capacity step {text!r}: write a factor like 'x1.5' or an increment like '+100'"
        )

    def after(self, chargers: int) -> int:
        """The next target above ``chargers`` (always at least one more)."""
        if self.kind == "increment":
            return chargers + int(self.value)
        # a small tolerance so that 100 x 1.1 is 110, not 111
        return max(chargers + 1, math.ceil(chargers * self.value - 1e-9))

    def __str__(self) -> str:
        return f"x{self.value:g}" if self.kind == "factor" else f"+{int(self.value)}"


def parse_step(text: str) -> Step:
    return Step.parse(text)


def parse_slo_overrides(text: str, known: Iterable[str] | None = None) -> dict[str, float]:
    """``BootNotification=2000,Heartbeat=500`` -> ``{"BootNotification": 2000.0, ...}`` (ms).

    Blank text is no overrides. ``known``, when given, is the set of valid action names
    (``loadgen.metrics.labels.known_actions()``); a name outside it is an error with a suggestion.
    """
    overrides: dict[str, float] = {}
    known_set = frozenset(known) if known is not None else None
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep:
            raise ValueError(
                f"SLO override {item!r}: write Action=milliseconds, e.g. Heartbeat=500"
            )
        if not _ACTION.match(name):
            raise ValueError(f"SLO override {item!r}: {name!r} is not an OCPP action name")
        if known_set is not None and name not in known_set:
            close = difflib.get_close_matches(name, sorted(known_set), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"SLO override {item!r}: unknown action {name!r}{hint}")
        if name in overrides:
            raise ValueError(f"SLO override for {name} given twice")
        try:
            ms = float(value)
        except ValueError:
            raise ValueError(
                f"SLO override {item!r}: {value!r} is not a number of milliseconds"
            ) from None
        if not (math.isfinite(ms) and ms > 0):
            raise ValueError(f"SLO override {item!r}: the p95 must be a positive number of ms")
        overrides[name] = ms
    return overrides


def parse_p95_slo(
    text: str, known: Iterable[str] | None = None
) -> tuple[float | None, dict[str, float]]:
    """``--slo-p95-ms``: ``1000`` (every action), ``1000,Heartbeat=500`` (with overrides),
    ``Heartbeat=500`` (only that action has a latency SLO) or ``none``.

    Returns ``(default ms or None, overrides)``.
    """
    default: float | None = None
    rest: list[str] = []
    seen_default = False
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            rest.append(item)
            continue
        if seen_default:
            raise ValueError(f"--slo-p95-ms {text!r}: give the default p95 only once")
        seen_default = True
        if item.lower() == "none":
            continue
        try:
            default = float(item)
        except ValueError:
            raise ValueError(
                f"--slo-p95-ms {text!r}: {item!r} is not a number of milliseconds "
                "(write e.g. 1000 or 1000,Heartbeat=500)"
            ) from None
        if not (math.isfinite(default) and default > 0):
            raise ValueError(f"--slo-p95-ms must be positive, not {item}")
    if not seen_default and not rest:
        raise ValueError("--slo-p95-ms is empty: give milliseconds (1000), overrides or none")
    return default, parse_slo_overrides(",".join(rest), known)


# -- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityConfig:
    """What the search does and the SLOs a step is judged against.

    ``step`` and ``p95_ms_by_action`` may be given as text (``"x1.5"``,
    ``"Heartbeat=500"``); they are parsed here. Ratios are fractions (0.01 = 1 %). A
    guard that is ``None`` is off. Invalid values raise ValueError with one line.
    """

    start: int = 100
    step: Step | str = "x1.5"
    max_chargers: int = 100_000
    hold_seconds: float = 300.0
    #: the default p95 SLO per action (ms); None: only the per-action overrides apply
    p95_ms: float | None = 1000.0
    p95_ms_by_action: Mapping[str, float] | str = field(default_factory=dict)
    #: connect SLO: the p95 of the ramp's BootNotifications (ms); None: no such SLO
    boot_p95_ms: float | None = 10_000.0
    #: CALLs not answered with a CALLRESULT / CALLs sent during the hold
    max_call_error_ratio: float | None = 0.01
    #: failed connection attempts / attempts during the hold
    max_connect_failure_ratio: float | None = 0.01
    #: connections the CSMS closed or lost during the hold / chargers
    max_disconnect_ratio: float | None = 0.01
    #: saturation guard: the load generator's schedule-lag p99 (worst worker), ms
    max_schedule_lag_p99_ms: float | None = 100.0
    #: saturation guard: CPU of the busiest load-generator process (1.0 = one core)
    max_generator_cpu: float | None = None
    #: stop bisecting when bad - good <= max(1, resolution, resolution_ratio * good)
    resolution: int = 1
    resolution_ratio: float = 0.0
    #: "both" (connect rate first, then concurrent chargers), "chargers" or "connect-rate"
    mode: str = "chargers"
    #: the connect-rate search: the first offered rate (new chargers/s) and the most
    rate_start: float = 5.0
    rate_max: float = 10_000.0
    #: chargers per rate step; 0: max(rate x 10 s, 20), never more than max_chargers
    rate_step_chargers: int = 0
    #: a rate step keeps pace when the boots' lateness grew by at most this share of the
    #: step's arrival time (0.025: the CSMS boots at least 1/1.025 of the offered rate)
    rate_pace_tolerance: float = 0.025

    def __post_init__(self) -> None:
        step = self.step if isinstance(self.step, Step) else Step.parse(self.step)
        object.__setattr__(self, "step", step)
        overrides = self.p95_ms_by_action
        if isinstance(overrides, str):
            overrides = parse_slo_overrides(overrides)
        else:
            overrides = dict(overrides)
            for name, ms in overrides.items():
                if not (isinstance(ms, int | float) and math.isfinite(ms) and ms > 0):
                    raise ValueError(f"the p95 SLO for {name} must be a positive number of ms")
        object.__setattr__(self, "p95_ms_by_action", overrides)
        if not (isinstance(self.start, int) and self.start >= 1):
            raise ValueError(f"--capacity-start must be a whole number >= 1, not {self.start}")
        if not (isinstance(self.max_chargers, int) and self.max_chargers >= self.start):
            raise ValueError(
                f"--capacity-max ({self.max_chargers}) must be a whole number "
                f">= --capacity-start ({self.start})"
            )
        if not (math.isfinite(self.hold_seconds) and self.hold_seconds > 0):
            raise ValueError(f"--capacity-hold must be positive, not {self.hold_seconds}")
        if self.p95_ms is not None and not (math.isfinite(self.p95_ms) and self.p95_ms > 0):
            raise ValueError(f"--slo-p95-ms must be positive, not {self.p95_ms}")
        if self.boot_p95_ms is not None and not (
            math.isfinite(self.boot_p95_ms) and self.boot_p95_ms > 0
        ):
            raise ValueError(f"--slo-boot-p95-ms must be positive, not {self.boot_p95_ms}")
        for name, ratio in (
            ("the CALL error ratio", self.max_call_error_ratio),
            ("the connect failure ratio", self.max_connect_failure_ratio),
            ("the disconnect ratio", self.max_disconnect_ratio),
        ):
            if ratio is not None and not 0 <= ratio <= 1:
                raise ValueError(f"{name} SLO must be between 0 and 1, not {ratio}")
        for name, value in (
            ("the schedule-lag guard", self.max_schedule_lag_p99_ms),
            ("the CPU guard", self.max_generator_cpu),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, not {value}")
        if not (isinstance(self.resolution, int) and self.resolution >= 0):
            raise ValueError(f"the resolution must be a whole number >= 0, not {self.resolution}")
        if not (math.isfinite(self.resolution_ratio) and 0 <= self.resolution_ratio < 1):
            raise ValueError(f"the resolution ratio must be 0 to 1, not {self.resolution_ratio}")
        if self.mode not in SEARCH_MODES:
            raise ValueError(
                f"--capacity-search {self.mode!r}: write both, chargers or connect-rate"
            )
        if not (math.isfinite(self.rate_start) and self.rate_start > 0):
            raise ValueError(f"--connect-rate-start must be positive, not {self.rate_start}")
        if not (math.isfinite(self.rate_max) and self.rate_max >= self.rate_start):
            raise ValueError(
                f"--connect-rate-max ({self.rate_max:g}) must be >= --connect-rate-start "
                f"({self.rate_start:g})"
            )
        if not (isinstance(self.rate_step_chargers, int) and self.rate_step_chargers >= 0):
            raise ValueError(
                "--connect-rate-step-chargers must be a whole number >= 0, "
                f"not {self.rate_step_chargers}"
            )
        if not (math.isfinite(self.rate_pace_tolerance) and 0 < self.rate_pace_tolerance < 1):
            raise ValueError(
                f"the pace tolerance must be between 0 and 1, not {self.rate_pace_tolerance}"
            )

    @property
    def searches_chargers(self) -> bool:
        return self.mode in ("both", "chargers")

    @property
    def searches_connect_rate(self) -> bool:
        return self.mode in ("both", "connect-rate")

    def rate_step_size(self, rate: float) -> int:
        """Fresh chargers of one rate step: about ten seconds of arrivals (enough for a
        backlog to show), at least 20, never more than the fleet allows."""
        wanted = self.rate_step_chargers or max(20, math.ceil(rate * 10 - 1e-9))
        return max(1, min(wanted, self.max_chargers))

    def rate_resolution_at(self, good: float) -> float:
        """How close the rate bisection gets (the share of --capacity-resolution, 5 %
        when that is given in chargers)."""
        return (self.resolution_ratio or 0.05) * good

    def resolution_at(self, good: int) -> int:
        """How close the bisection gets: good and bad at most this far apart."""
        return max(1, self.resolution, math.ceil(self.resolution_ratio * good - 1e-9))

    def p95_slo_ms(self, action: str) -> float | None:
        """The p95 SLO of one action (ms), None when it has none."""
        return self.p95_ms_by_action.get(action, self.p95_ms)  # type: ignore[union-attr]
