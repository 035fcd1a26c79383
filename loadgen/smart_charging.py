"""Smart charging: the charging profiles a station holds and the limits they set (pure code).

One home for both OCPP versions; :mod:`loadgen.protocols.v201` and :mod:`loadgen.protocols.v16`
turn their messages into :class:`ChargingProfile` and back. Purposes are named in 2.0.1's
words (1.6's ``ChargePointMaxProfile`` is a ``ChargingStationMaxProfile``; a 1.6 connector
is an EVSE here). Times are seconds since the epoch on the CSMS's (wall) clock.

What a station does with them, as OCPP 2.0.1 K01 / 1.6 §3.13 describe:

- a ``ChargingStationMaxProfile`` (EVSE 0) caps every EVSE; a ``TxProfile`` bound to the
  running transaction, or else the ``TxDefaultProfile`` (one on the EVSE before one on EVSE
  0 at the same stack level), limits the transaction; the limit in force is the smaller of
  the two, and never above the EVSE's rated power;
- of the profiles of one purpose, the one with the highest stack level that is valid
  (validFrom / validTo) and whose schedule covers the moment wins; outside its schedule's
  duration the next one down applies;
- Absolute schedules start at ``startSchedule``; Relative ones (and Absolute ones without
  ``startSchedule``) at the transaction's start, or when they were set if there is none;
  Recurring ones repeat daily or weekly from ``startSchedule``.

Simplified: only a profile's first ``chargingSchedule`` is used (2.0.1 allows up to three
for ISO 15118); ``minChargingRate``, ``phaseToUse`` and sales tariffs are kept and reported
but ignored; Amperes become Watts at :data:`NOMINAL_VOLTAGE_V` per phase times
``numberPhases`` (3 when absent); the ChargingStationMaxProfile caps each EVSE on its own
rather than the sum of them; a composite schedule for an EVSE without a transaction
includes the TxDefaultProfile as if a transaction started at the schedule's start.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from loadgen.protocols import parse_timestamp

#: volts per phase when a limit in Amperes becomes Watts
NOMINAL_VOLTAGE_V = 230.0
#: phases a limit in Amperes applies to when its period does not say
DEFAULT_PHASES = 3
#: the chargingLimitSource of every profile a station holds here: the CSMS (the CSO) set it
SOURCE = "CSO"

STATION_MAX = "ChargingStationMaxProfile"
TX_DEFAULT = "TxDefaultProfile"
TX = "TxProfile"
EXTERNAL = "ChargingStationExternalConstraints"

_RECURRENCE_S = {"Daily": 86_400.0, "Weekly": 7 * 86_400.0}
# Schedule boundaries land on the clock exactly; floats (millisecond startSchedules, large
# epochs) may not: treat anything this close as on the boundary.
_EPSILON_S = 1e-6
#: the most profiles a station holds (1.6 MaxChargingProfilesInstalled); more are Rejected
MAX_PROFILES = 64
# a composite schedule longer than this many periods is cut (a week of 5-minute periods)
_MAX_COMPOSITE_PERIODS = 2016


@dataclass(frozen=True)
class Period:
    """One chargingSchedulePeriod: from ``start`` seconds into the schedule, at most ``limit``."""

    start: int
    limit: float  # in the schedule's rate unit
    number_phases: int | None = None


@dataclass
class ChargingProfile:
    """A charging profile as the station holds it, whichever version it came in."""

    id: int
    stack_level: int
    purpose: str
    kind: str  # Absolute, Recurring, Relative
    rate_unit: str  # W or A
    periods: list[Period]
    evse_id: int = 0
    recurrency: str | None = None  # Daily, Weekly
    valid_from: float | None = None
    valid_to: float | None = None
    start_schedule: float | None = None
    duration: float | None = None
    transaction_id: str | None = None
    #: the profile as the CSMS sent it, reported back by GetChargingProfiles (2.0.1)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    installed_at: float = 0.0

    def watts(self, period: Period, voltage_v: float = NOMINAL_VOLTAGE_V) -> float:
        """A period's limit in W."""
        return to_watts(period.limit, self.rate_unit, period.number_phases, voltage_v)


class ProfileRejected(ValueError):
    """A profile a charger refuses; ``reason_code`` goes in statusInfo (2.0.1)."""

    def __init__(self, reason_code: str, additional_info: str) -> None:
        super().__init__(f"{reason_code}: {additional_info}")
        self.reason_code = reason_code
        self.additional_info = additional_info

    def status_info(self) -> dict[str, str]:
        return {"reasonCode": self.reason_code[:20], "additionalInfo": self.additional_info[:512]}


def to_watts(
    limit: float, unit: str, phases: int | None = None, voltage_v: float = NOMINAL_VOLTAGE_V
) -> float:
    """A limit in ``unit`` (W or A) as Watts."""
    if unit == "A":
        return limit * voltage_v * (phases or DEFAULT_PHASES)
    return float(limit)


def from_watts(watts: float, unit: str, voltage_v: float = NOMINAL_VOLTAGE_V) -> float:
    """Watts as a limit in ``unit`` (W, or A on :data:`DEFAULT_PHASES` phases)."""
    if unit == "A":
        return watts / (voltage_v * DEFAULT_PHASES)
    return watts


def check(profile: ChargingProfile) -> None:
    """Raise :class:`ProfileRejected` for a profile that makes no sense on its own."""
    if profile.stack_level < 0:
        raise ProfileRejected("InvalidStackLevel", "stackLevel must not be negative")
    periods = profile.periods
    if not periods:
        raise ProfileRejected("InvalidSchedule", "no chargingSchedulePeriod")
    if periods[0].start != 0:
        raise ProfileRejected("InvalidSchedule", "the first startPeriod must be 0")
    if any(b.start <= a.start for a, b in itertools.pairwise(periods)):
        raise ProfileRejected("InvalidSchedule", "startPeriods must increase")
    for period in periods:
        if not math.isfinite(period.limit) or period.limit < 0:
            raise ProfileRejected("InvalidSchedule", f"limit {period.limit} is not allowed")
        if period.number_phases is not None and not 1 <= period.number_phases <= 3:
            raise ProfileRejected("InvalidSchedule", "numberPhases must be 1 to 3")
    if profile.duration is not None and profile.duration <= 0:
        raise ProfileRejected("InvalidSchedule", "duration must be positive")
    if profile.kind == "Recurring" and (
        profile.recurrency not in _RECURRENCE_S or profile.start_schedule is None
    ):
        raise ProfileRejected("InvalidProfile", "Recurring needs recurrencyKind and startSchedule")
    if (
        profile.valid_from is not None
        and profile.valid_to is not None
        and profile.valid_to <= profile.valid_from
    ):
        raise ProfileRejected("InvalidProfile", "validTo is not after validFrom")


@dataclass(frozen=True)
class ActiveTransaction:
    """What the profiles need to know of a running transaction."""

    transaction_id: str
    started_at: float


class SmartCharging:
    """The profiles one station holds, per EVSE, and the limits they set.

    ``replace_same_stack_level``: OCPP 1.6 replaces a profile with the same purpose and stack
    level on the same connector; 2.0.1 rejects the second one (DuplicateProfile).
    """

    def __init__(
        self,
        evse_ids: Iterable[int],
        *,
        voltage_v: float = NOMINAL_VOLTAGE_V,
        replace_same_stack_level: bool = False,
    ) -> None:
        self.evse_ids = frozenset(evse_ids)
        self.voltage_v = voltage_v
        self.replace_same_stack_level = replace_same_stack_level
        self.profiles: list[ChargingProfile] = []

    # -- what the CSMS asks --------------------------------------------------------------

    def install(
        self, profile: ChargingProfile, transaction: ActiveTransaction | None, now: float
    ) -> None:
        """Install ``profile`` on its EVSE or raise :class:`ProfileRejected`.

        ``transaction`` is the one running on that EVSE; a TxProfile is bound to it.
        """
        check(profile)
        evse_id = profile.evse_id
        if evse_id != 0 and evse_id not in self.evse_ids:
            raise ProfileRejected("UnknownEvse", f"no EVSE {evse_id}")
        if profile.purpose == EXTERNAL:
            raise ProfileRejected("InvalidProfile", f"{EXTERNAL} are not set by the CSMS")
        if profile.purpose == STATION_MAX and evse_id != 0:
            raise ProfileRejected("InvalidProfile", f"a {STATION_MAX} belongs on EVSE 0")
        if profile.purpose == TX:
            if evse_id == 0:
                raise ProfileRejected("InvalidProfile", "a TxProfile belongs on an EVSE")
            if transaction is None:
                raise ProfileRejected("TxNotFound", f"no transaction on EVSE {evse_id}")
            if profile.transaction_id not in (None, transaction.transaction_id):
                raise ProfileRejected(
                    "TxNotFound", f"transaction {profile.transaction_id} is not on EVSE {evse_id}"
                )
            profile.transaction_id = transaction.transaction_id
        else:
            profile.transaction_id = None
        same_level = [
            p
            for p in self.profiles
            if p.id != profile.id
            and p.purpose == profile.purpose
            and p.stack_level == profile.stack_level
            and p.evse_id == evse_id
            and p.transaction_id == profile.transaction_id
        ]
        if not self.replace_same_stack_level and any(
            _validity_overlaps(p, profile) for p in same_level
        ):
            raise ProfileRejected(
                "DuplicateProfile", f"profile {same_level[0].id} has this purpose and stackLevel"
            )
        replaced = {p.id for p in same_level} if self.replace_same_stack_level else set()
        replaced.add(profile.id)
        if sum(p.id not in replaced for p in self.profiles) >= MAX_PROFILES:
            raise ProfileRejected("TooManyProfiles", f"{MAX_PROFILES} profiles are installed")
        self.profiles = [p for p in self.profiles if p.id not in replaced]
        profile.installed_at = now
        self.profiles.append(profile)

    def select(
        self,
        evse_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
        ids: Iterable[int] | None = None,
    ) -> list[ChargingProfile]:
        """The profiles that match every criterion given (``evse_id`` 0: the station's)."""
        wanted = set(ids) if ids is not None else None
        return [
            p
            for p in self.profiles
            if (wanted is None or p.id in wanted)
            and (evse_id is None or p.evse_id == evse_id)
            and (purpose is None or p.purpose == purpose)
            and (stack_level is None or p.stack_level == stack_level)
        ]

    def clear(
        self,
        profile_id: int | None = None,
        evse_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> int:
        """Remove the profile ``profile_id``, or else every one matching the criteria;
        returns how many went."""
        if profile_id is not None:
            gone = self.select(ids=[profile_id])
        else:
            gone = self.select(evse_id, purpose, stack_level)
        self.profiles = [p for p in self.profiles if all(p is not g for g in gone)]
        return len(gone)

    def forget_transactions_but(self, running: Iterable[str]) -> None:
        """Drop the TxProfiles of transactions that have ended (they die with them)."""
        keep = set(running)
        self.profiles = [p for p in self.profiles if p.purpose != TX or p.transaction_id in keep]

    # -- the limits they set -------------------------------------------------------------

    def limit_w(
        self, evse_id: int, at: float, transaction: ActiveTransaction | None = None
    ) -> float | None:
        """The limit in W on ``evse_id`` at ``at``, or None when no profile applies."""
        limits = []
        station_max = self._top(STATION_MAX, evse_id, at, transaction)
        if station_max is not None:
            limits.append(station_max)
        if evse_id != 0:
            tx = self._top(TX, evse_id, at, transaction) if transaction else None
            if tx is None:
                tx = self._top(TX_DEFAULT, evse_id, at, transaction)
            if tx is not None:
                limits.append(tx)
        return min(limits) if limits else None

    def next_change(
        self, evse_id: int, after: float, transaction: ActiveTransaction | None = None
    ) -> float | None:
        """The next moment after ``after`` when the limit on ``evse_id`` may change."""
        moments = [
            moment
            for profile in self._relevant(evse_id, transaction)
            if (moment := self._next_boundary(profile, after, transaction)) is not None
        ]
        return min(moments) if moments else None

    def composite(
        self,
        evse_id: int,
        start: float,
        duration: float,
        rated_w: float,
        transaction: ActiveTransaction | None = None,
    ) -> list[tuple[int, float]]:
        """The composite schedule: ``(startPeriod, limit in W)`` pairs from ``start`` for
        ``duration`` seconds; where no profile applies, the EVSE's rated power."""
        if evse_id != 0 and transaction is None:
            # as if a transaction started now: the TxDefaultProfile's relative schedule
            transaction = ActiveTransaction("", start)
        periods: list[tuple[int, float]] = []
        at, end = start, start + duration
        while at < end - _EPSILON_S and len(periods) < _MAX_COMPOSITE_PERIODS:
            limit = self.limit_w(evse_id, at, transaction)
            limit = rated_w if limit is None else min(limit, rated_w)
            offset = round(at - start)
            if periods and periods[-1][0] == offset:
                periods.pop()
            if not periods or periods[-1][1] != limit:
                periods.append((offset, limit))
            following = self.next_change(evse_id, at, transaction)
            if following is None:
                break
            at = following
        return periods

    # -- internals -----------------------------------------------------------------------

    def _relevant(
        self, evse_id: int, transaction: ActiveTransaction | None
    ) -> list[ChargingProfile]:
        """The profiles that may limit ``evse_id`` (0: the station as a whole)."""
        tx_id = transaction.transaction_id if transaction is not None else None

        def applies(p: ChargingProfile) -> bool:
            if p.purpose == STATION_MAX:
                return True
            if evse_id == 0:
                return False
            if p.purpose == TX_DEFAULT:
                return p.evse_id in (0, evse_id)
            # a TxProfile limits its own transaction only
            return p.purpose == TX and tx_id is not None and p.transaction_id == tx_id

        return [p for p in self.profiles if applies(p)]

    def _top(
        self, purpose: str, evse_id: int, at: float, transaction: ActiveTransaction | None
    ) -> float | None:
        """The limit of the highest-stacked profile of ``purpose`` in force at ``at``."""
        best: tuple[int, int, float] | None = None
        for p in self._relevant(evse_id, transaction):
            if p.purpose != purpose:
                continue
            limit = self._profile_limit(p, at, transaction)
            if limit is None:
                continue
            # at the same stack level a profile on the EVSE beats one on EVSE 0
            rank = (p.stack_level, int(p.evse_id != 0), -limit)
            if best is None or rank > best:
                best = rank
        return -best[2] if best is not None else None

    def _schedule_start(
        self, p: ChargingProfile, at: float, transaction: ActiveTransaction | None
    ) -> float:
        if p.kind == "Recurring":
            assert p.start_schedule is not None  # check() made sure
            every = _RECURRENCE_S[p.recurrency or "Daily"]
            cycles = math.floor((at - p.start_schedule + _EPSILON_S) / every)
            return p.start_schedule + cycles * every
        if p.kind == "Absolute" and p.start_schedule is not None:
            return p.start_schedule
        return transaction.started_at if transaction is not None else p.installed_at

    def _profile_limit(
        self, p: ChargingProfile, at: float, transaction: ActiveTransaction | None
    ) -> float | None:
        if p.valid_from is not None and at < p.valid_from - _EPSILON_S:
            return None
        if p.valid_to is not None and at >= p.valid_to - _EPSILON_S:
            return None
        offset = at - self._schedule_start(p, at, transaction) + _EPSILON_S
        if offset < 0 or (p.duration is not None and offset >= p.duration):
            return None
        current = p.periods[0]
        for period in p.periods:
            if period.start > offset:
                break
            current = period
        return p.watts(current, self.voltage_v)

    def _next_boundary(
        self, p: ChargingProfile, after: float, transaction: ActiveTransaction | None
    ) -> float | None:
        start = self._schedule_start(p, after, transaction)
        moments = [start + period.start for period in p.periods]
        if p.duration is not None:
            moments.append(start + p.duration)
        if p.kind == "Recurring":
            moments.append(start + _RECURRENCE_S[p.recurrency or "Daily"])
        moments += [m for m in (p.valid_from, p.valid_to) if m is not None]
        later = [m for m in moments if m > after + _EPSILON_S]
        return min(later) if later else None


def _validity_overlaps(a: ChargingProfile, b: ChargingProfile) -> bool:
    a_from, a_to = a.valid_from or -math.inf, a.valid_to or math.inf
    b_from, b_to = b.valid_from or -math.inf, b.valid_to or math.inf
    return a_from < b_to and b_from < a_to


def parse_time(text: str | None) -> float | None:
    """An OCPP dateTime in a profile as epoch seconds; a bad one rejects the profile."""
    if text is None:
        return None
    try:
        return parse_timestamp(text).timestamp()
    except (ValueError, TypeError, OverflowError):
        raise ProfileRejected("InvalidValue", f"not a dateTime: {str(text)[:40]}") from None
