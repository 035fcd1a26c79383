"""A station's answers to the CSMS's smart charging CALLs (pure code, no sockets).

The profiles and the limits they set live in :mod:`loadgen.smart_charging`; this module
reads the CALLs of both versions into it and answers them:

- 2.0.1: SetChargingProfile, GetChargingProfiles (answered, then ReportChargingProfiles
  with the matching profiles, one message per EVSE, ``tbc`` on all but the last),
  ClearChargingProfile, GetCompositeSchedule; RequestStartTransaction's chargingProfile;
- 1.6: SetChargingProfile, ClearChargingProfile, GetCompositeSchedule;
  RemoteStartTransaction's chargingProfile.

After every change the station's EVSEs follow the new limit
(:meth:`~loadgen.station.Station.apply_charging_limits`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loadgen.protocols import v16
from loadgen.smart_charging import (
    SOURCE,
    TX,
    ActiveTransaction,
    ChargingProfile,
    ProfileRejected,
    check,
    from_watts,
)

if TYPE_CHECKING:
    from loadgen.station import Station, Transaction

Handler = Callable[["Station", dict[str, Any]], dict[str, Any]]


def _running(station: Station, evse_id: int) -> ActiveTransaction | None:
    """The transaction on ``evse_id`` as the profiles know it (by the station's own id,
    which a 1.6 transaction keeps before and after the CSMS assigns its number)."""
    evse = station.evses.get(evse_id)
    transaction = evse.transaction if evse is not None else None
    if transaction is None or transaction.stopping:
        return None
    return active_transaction(transaction)


def _tidy(station: Station) -> None:
    """TxProfiles end with their transaction."""
    station.smart_charging.forget_transactions_but(t.local_id for t in station.transactions)


def _install(station: Station, profile: ChargingProfile) -> None:
    """Install ``profile`` (raises :class:`ProfileRejected`) and follow the new limits."""
    _tidy(station)
    running = _running(station, profile.evse_id)
    if profile.purpose == TX and running is not None and profile.transaction_id is not None:
        # The CSMS names the transaction by its id (1.6: the number it assigned).
        transaction = station.evses[profile.evse_id].transaction
        assert transaction is not None
        if profile.transaction_id != transaction.transaction_id:
            raise ProfileRejected(
                "TxNotFound", f"transaction {profile.transaction_id} is not on this EVSE"
            )
        profile.transaction_id = running.transaction_id
    station.smart_charging.install(profile, running, station.now_wall())
    station.apply_charging_limits()


def _rejected(exc: ProfileRejected, with_info: bool) -> dict[str, Any]:
    reply: dict[str, Any] = {"status": "Rejected"}
    if with_info:
        reply["statusInfo"] = exc.status_info()
    return reply


def _composite_periods(
    station: Station, evse_id: int, duration: int, unit: str
) -> tuple[float, list[tuple[int, float]]]:
    _tidy(station)
    start = station.now_wall()
    rated = station.charger.rated_power_w
    if evse_id == 0:
        rated *= len(station.evses)
    smart = station.smart_charging
    periods = smart.composite(evse_id, start, duration, rated, _running(station, evse_id))
    return start, [
        (offset, round(from_watts(watts, unit, smart.voltage_v), 1)) for offset, watts in periods
    ]


def remote_start_profile(
    station: Station,
    request: dict[str, Any],
    parse: Callable[[dict[str, Any], int], ChargingProfile],
    with_info: bool,
) -> ChargingProfile | dict[str, Any] | None:
    """Read the chargingProfile of a RequestStartTransaction (RemoteStartTransaction)
    with the version's ``parse`` before the transaction starts: a profile to install once
    it has, None if there is none, or the Rejected answer to the remote start (only a
    TxProfile may come with it; ``with_info``: with the statusInfo saying why, 2.0.1)."""
    raw = request.get("chargingProfile")
    if raw is None:
        return None
    try:
        profile = parse(raw, 0)
        if profile.purpose != TX:
            raise ProfileRejected("InvalidProfile", "a remote start takes a TxProfile")
        if profile.transaction_id is not None:
            raise ProfileRejected("InvalidProfile", "the transaction has no id yet")
        check(profile)
    except ProfileRejected as exc:
        return _rejected(exc, with_info=with_info)
    return profile


def adopt_remote_start_profile(
    station: Station, profile: ChargingProfile, transaction: Transaction
) -> None:
    """Bind a remote start's TxProfile to the transaction the start began."""
    profile.evse_id = transaction.evse_id
    # checked before the start; nothing else can make it fail on a new transaction
    with contextlib.suppress(ProfileRejected):
        _install(station, profile)


# -- 2.0.1 ---------------------------------------------------------------------------------


def _set_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        _install(
            station,
            station.messages.charging_profile_from(payload["chargingProfile"], payload["evseId"]),
        )
    except ProfileRejected as exc:
        return _rejected(exc, with_info=True)
    return {"status": "Accepted"}


def _get_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    _tidy(station)
    criterion = payload["chargingProfile"]
    sources = criterion.get("chargingLimitSource")
    found = []
    if sources is None or SOURCE in sources:
        found = station.smart_charging.select(
            payload.get("evseId"),
            criterion.get("chargingProfilePurpose"),
            criterion.get("stackLevel"),
            criterion.get("chargingProfileId"),
        )
    if not found:
        return {"status": "NoProfiles"}
    evse_ids = sorted({p.evse_id for p in found})
    for n, evse_id in enumerate(evse_ids):
        profiles = [_as_reported(p) for p in found if p.evse_id == evse_id]
        _, report = station.messages.report_charging_profiles(
            payload["requestId"], evse_id, profiles, SOURCE, tbc=n < len(evse_ids) - 1
        )
        station.queue_call("ReportChargingProfiles", report)
    return {"status": "Accepted"}


def _as_reported(profile: ChargingProfile) -> dict[str, Any]:
    if profile.purpose == TX and profile.transaction_id is not None:
        return {**profile.raw, "transactionId": profile.transaction_id}
    return profile.raw


def _clear_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    _tidy(station)
    criteria = payload.get("chargingProfileCriteria") or {}
    cleared = station.smart_charging.clear(
        payload.get("chargingProfileId"),
        criteria.get("evseId"),
        criteria.get("chargingProfilePurpose"),
        criteria.get("stackLevel"),
    )
    if not cleared:
        return {
            "status": "Unknown",
            "statusInfo": {"reasonCode": "NotFound", "additionalInfo": "no profile matches"},
        }
    station.apply_charging_limits()
    return {"status": "Accepted"}


def _composite_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    evse_id, duration = payload["evseId"], payload["duration"]
    if evse_id != 0 and evse_id not in station.evses:
        return {
            "status": "Rejected",
            "statusInfo": {"reasonCode": "UnknownEvse", "additionalInfo": f"no EVSE {evse_id}"},
        }
    if duration <= 0:
        return {
            "status": "Rejected",
            "statusInfo": {"reasonCode": "InvalidValue", "additionalInfo": "duration <= 0"},
        }
    unit = payload.get("chargingRateUnit") or "W"
    start, periods = _composite_periods(station, evse_id, duration, unit)
    schedule = station.messages.composite_schedule(evse_id, duration, start, unit, periods)
    return {"status": "Accepted", "schedule": schedule}


HANDLERS_201: dict[str, Handler] = {
    "SetChargingProfile": _set_201,
    "GetChargingProfiles": _get_201,
    "ClearChargingProfile": _clear_201,
    "GetCompositeSchedule": _composite_201,
}


# -- 1.6 -----------------------------------------------------------------------------------


def _set_16(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        profile = v16.charging_profile_from(payload["csChargingProfiles"], payload["connectorId"])
        _install(station, profile)
    except ProfileRejected as exc:
        return _rejected(exc, with_info=False)
    return {"status": "Accepted"}


def _clear_16(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    _tidy(station)
    purpose = payload.get("chargingProfilePurpose")
    cleared = station.smart_charging.clear(
        payload.get("id"),
        payload.get("connectorId"),
        None if purpose is None else v16.purpose_from_16(purpose),
        payload.get("stackLevel"),
    )
    if not cleared:
        return {"status": "Unknown"}
    station.apply_charging_limits()
    return {"status": "Accepted"}


def _composite_16(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    connector_id, duration = payload["connectorId"], payload["duration"]
    if (connector_id != 0 and connector_id not in station.evses) or duration <= 0:
        return {"status": "Rejected"}
    unit = payload.get("chargingRateUnit") or "W"
    start, periods = _composite_periods(station, connector_id, duration, unit)
    return v16.composite_schedule(connector_id, duration, start, unit, periods)


HANDLERS_16: dict[str, Handler] = {
    "SetChargingProfile": _set_16,
    "ClearChargingProfile": _clear_16,
    "GetCompositeSchedule": _composite_16,
}


def active_transaction(transaction: Transaction) -> ActiveTransaction:
    """A transaction as charging profiles see it: by the station's own id (a 1.6
    transaction keeps it before and after the CSMS assigns its number), started at the
    wall-clock time the CSMS was told (Relative schedules count from it)."""
    assert transaction.started_stamp is not None  # set when the transaction begins
    return ActiveTransaction(transaction.local_id, transaction.started_stamp)
