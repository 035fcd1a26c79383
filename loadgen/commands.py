"""How a station answers the CSMS's commands beyond the core ones, and the state behind them.

Reports of the device model (GetBaseReport, GetReport, multi-part NotifyReport), the local
authorisation list, reservations, firmware updates and log uploads with their status
notifications, transaction status and cost, monitoring, display messages and customer
information: each keeps what a charger keeps, so a CSMS that reads back what it set finds it.
Where a simulated charger has nothing to act on (certificates, network profiles, firmware
publishing) the answer is the one a real charger without that function gives (Rejected,
NotFound, ...): the table in ``docs/csms-commands.md`` lists every choice.

This module holds what the versions share; each version's entry points (its handlers, which
read that version's request and build its answer) are in its module of
:mod:`loadgen.stations`, which passes in the version's own status notifications. Handlers
take the :class:`~loadgen.station.Station` and a request that has passed schema validation
(the link validates with ``--ocpp-validate``; a broken one raises there and the link answers
a CALLERROR) and return the CALLRESULT payload. Follow-up messages are queued on the
station; those that wait (a firmware download) run on the station's timers, so the whole
module is pure and runs on a fake clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loadgen.device_model import LOCAL_LIST_MAX, Variable
from loadgen.protocols import Request, parse_timestamp

if TYPE_CHECKING:
    from loadgen.station import Station

Handler = Callable[["Station", dict[str, Any]], dict[str, Any]]
#: a version's status notification for a status (FirmwareStatusNotification, ...)
Notification = Callable[[str], Request]

#: simulated seconds a firmware download, an installation and a log upload take
DOWNLOAD_S = 5.0
INSTALL_S = 5.0
UPLOAD_S = 2.0
#: how often an installation waiting for transactions to end looks again
INSTALL_POLL_S = 10.0


@dataclass
class Reservation:
    id: int
    evse_id: int
    token: str
    expires_at: float  # on the station's clock
    group_token: str | None = None


@dataclass
class LocalList:
    """The local authorisation list: idToken -> idTokenInfo (1.6: idTag -> idTagInfo)."""

    version: int = 0
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class CommandState:
    """What a station keeps for the CSMS's commands (one per station)."""

    reservations: dict[int, Reservation] = field(default_factory=dict)
    local_list: LocalList = field(default_factory=LocalList)
    display_messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: variable monitors: id -> (the variable, SetMonitoringData without component/variable)
    monitors: dict[int, tuple[Variable, dict[str, Any]]] = field(default_factory=dict)
    monitor_ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    monitoring_base: str = "All"
    monitoring_level: int = 9
    #: the firmware update under way: (its requestId, a generation to cancel its timers)
    firmware_status: str = "Idle"
    firmware_request: int | None = None
    firmware_generation: int = 0
    log_status: str = "Idle"
    log_request: int | None = None


def due(station: Station, when: str) -> float:
    """A CSMS's dateTime, which is wall-clock time, as a time on the station's clock (they
    differ under ``--time-scale``; a test's fake clock takes it as it is)."""
    return station.clock_from_wall(parse_timestamp(when).timestamp())


# -- local authorisation list ------------------------------------------------------------


def send_local_list(
    station: Station, version: int, update_type: str, items: list[tuple[str, Any]]
) -> str:
    """SendLocalList, read into (idToken, its info or None to remove) pairs."""
    local = station.commands.local_list
    if update_type == "Differential" and version <= local.version:
        return "VersionMismatch"  # an update the list already has, or older
    entries = {} if update_type == "Full" else dict(local.entries)
    for token, info in items:
        if info is None:
            entries.pop(token, None)  # Differential without info: remove
        else:
            entries[token] = info
    if len(entries) > LOCAL_LIST_MAX:
        return "Failed"
    local.version, local.entries = version, entries
    return "Accepted"


# -- reservations ------------------------------------------------------------------------


def reservation_on(station: Station, evse_id: int) -> Reservation | None:
    for reservation in station.commands.reservations.values():
        if reservation.evse_id == evse_id:
            return reservation
    return None


def reserve(
    station: Station,
    reservation_id: int,
    evse_id: int | None,
    token: str,
    expiry: str,
    group_token: str | None,
) -> str:
    reservations = station.commands.reservations
    previous = reservations.get(reservation_id)
    if evse_id is None:  # not EVSE-specific: hold the first free one
        free = [
            evse.id
            for evse in station.evses.values()
            if evse.operative
            and evse.transaction is None
            and (reservation_on(station, evse.id) in (None, previous))
        ]
        if not free:
            return "Occupied"
        evse_id = free[0]
    evse = station.evses.get(evse_id)
    if evse is None:
        return "Rejected"
    if not evse.operative:
        return "Unavailable"
    holder = reservation_on(station, evse_id)
    if evse.transaction is not None or holder not in (None, previous):
        return "Occupied"
    expires_at = due(station, expiry)
    if expires_at <= station.clock.now():
        return "Rejected"
    if previous is not None:  # the same id again replaces the reservation (H01.FR.02)
        _end_reservation(station, previous, None)
    reservation = Reservation(reservation_id, evse_id, token, expires_at, group_token)
    reservations[reservation_id] = reservation
    station.set_idle_status(evse)
    station.schedule(expires_at, lambda: _expire(station, reservation))
    return "Accepted"


def _expire(station: Station, reservation: Reservation) -> None:
    if station.commands.reservations.get(reservation.id) is reservation:
        _end_reservation(station, reservation, "Expired")


def _end_reservation(station: Station, reservation: Reservation, update: str | None) -> None:
    del station.commands.reservations[reservation.id]
    station.set_idle_status(station.evses[reservation.evse_id])
    # 1.6 has no ReservationStatusUpdate: its charger says nothing when one expires
    build = getattr(station.messages, "reservation_status_update", None)
    if update is not None and build is not None:
        station.notify(*build(reservation.id, update))


def use_reservation(station: Station, evse_id: int, token: str) -> tuple[bool, int | None]:
    """May ``token`` charge on ``evse_id``? And the reservation it uses, if any: a reserved
    EVSE refuses every other token (its group token too is accepted)."""
    reservation = reservation_on(station, evse_id)
    if reservation is None:
        return True, None
    if token not in (reservation.token, reservation.group_token):
        return False, None
    del station.commands.reservations[reservation.id]  # used: a transaction holds it now
    return True, reservation.id


def cancel_reservation(station: Station, reservation_id: int) -> dict[str, Any]:
    reservation = station.commands.reservations.get(reservation_id)
    if reservation is None:
        return {"status": "Rejected"}
    _end_reservation(station, reservation, None)
    return {"status": "Accepted"}


# -- firmware ----------------------------------------------------------------------------


def update_firmware(
    station: Station,
    request_id: int | None,
    retrieve: str,
    install: str | None,
    notification: Notification,
) -> bool:
    """Download at ``retrieve``, install at ``install`` once no transaction runs, reboot,
    report Installed after the boot, each step told with the version's ``notification``.
    Returns whether an update under way was cancelled."""
    state = station.commands
    cancelled = state.firmware_status not in ("Idle", "Installed")
    state.firmware_generation += 1
    generation = state.firmware_generation
    state.firmware_request = request_id
    state.firmware_status = "DownloadScheduled"  # until the download starts
    now = station.clock.now()

    def step(status: str, then: Callable[[], None] | None = None, after: float = 0.0) -> None:
        if state.firmware_generation != generation:
            return  # a newer update replaced this one
        state.firmware_status = status
        station.notify(*notification(status))
        if then is not None:
            station.schedule(station.clock.now() + after, then)

    def installing() -> None:
        if state.firmware_generation != generation:
            return
        install_at = due(station, install) if install else 0.0
        if station.transactions or station.clock.now() < install_at:
            # A charger does not cut a session short to install (L01.FR.06).
            later = max(station.clock.now() + INSTALL_POLL_S, install_at)
            station.schedule(later, installing)
            return
        step("Installing", reboot, INSTALL_S)

    def reboot() -> None:
        if state.firmware_generation != generation:
            return
        state.firmware_status = "Installed"
        station.after_boot(*notification("Installed"))
        station.reboot("FirmwareUpdate")

    retrieve_at = max(now, due(station, retrieve))
    station.schedule(
        retrieve_at, lambda: step("Downloading", lambda: step("Downloaded", installing), DOWNLOAD_S)
    )
    return cancelled


def update_firmware_request(
    station: Station, payload: dict[str, Any], notification: Notification
) -> dict[str, Any]:
    """2.0.1 UpdateFirmware and 1.6 SignedUpdateFirmware: the same request and answer."""
    firmware = payload["firmware"]
    cancelled = update_firmware(
        station,
        payload["requestId"],
        firmware["retrieveDateTime"],
        firmware.get("installDateTime"),
        notification,
    )
    return {"status": "AcceptedCanceled" if cancelled else "Accepted"}


# -- logs --------------------------------------------------------------------------------


def upload_log(
    station: Station,
    request_id: int | None,
    notification: Notification,
    failed: str = "UploadFailure",
) -> None:
    """Uploading, then ``failed`` (1.6 GetDiagnostics: UploadFailed): a simulated charger
    has no log to put at the CSMS's location, and saying Uploaded would send the CSMS
    looking for a file that is not there. ``notification`` builds the version's status
    message."""
    state = station.commands
    state.log_request = request_id

    def notify(status: str) -> None:
        state.log_status = status
        station.notify(*notification(status))

    now = station.clock.now()
    station.schedule(now + 1.0, lambda: notify("Uploading"))
    station.schedule(now + 1.0 + UPLOAD_S, lambda: notify(failed))


def get_log(
    station: Station,
    payload: dict[str, Any],
    notification: Callable[[str, int | None], Request],
) -> dict[str, Any]:
    """2.0.1 GetLog and the 1.6 security extension's, the same message; ``notification``
    is the version's LogStatusNotification."""
    request_id = payload["requestId"]
    upload_log(station, request_id, lambda status: notification(status, request_id))
    filename = f"{station.charger.id}-{payload['logType']}-{payload['requestId']}.log"
    return {"status": "Accepted", "filename": filename[:255]}


# -- what every version answers alike ----------------------------------------------------


def clear_cache(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return {"status": "Accepted"}


def data_transfer(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return {"status": "UnknownVendorId"}


def status(value: str) -> Handler:
    """A handler that always answers ``value``: for what a simulated charger has nothing
    to act on."""

    def handler(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": value}

    return handler


#: No certificate store: nothing installed, nothing to delete, no CSR was sent.
NO_CERTIFICATE_STORE: dict[str, Handler] = {
    "InstallCertificate": status("Rejected"),
    "GetInstalledCertificateIds": status("NotFound"),
    "DeleteCertificate": status("NotFound"),
    "CertificateSigned": status("Rejected"),
}
