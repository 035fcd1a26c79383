"""How a station answers the CSMS's commands beyond the core ones, and the state behind them.

Reports of the device model (GetBaseReport, GetReport, multi-part NotifyReport), the local
authorisation list, reservations, firmware updates and log uploads with their status
notifications, transaction status and cost, monitoring, display messages and customer
information: each keeps what a charger keeps, so a CSMS that reads back what it set finds it.
Where a simulated charger has nothing to act on (certificates, network profiles, firmware
publishing) the answer is the one a real charger without that function gives (Rejected,
NotFound, ...): the table in ``docs/csms-commands.md`` lists every choice.

Handlers take the :class:`~loadgen.station.Station` and a request that has passed schema
validation (the link validates with ``--ocpp-validate``; a broken one raises here and the
link answers a CALLERROR) and return the CALLRESULT payload. Follow-up messages are queued
on the station; those that wait (a firmware download) run on the station's timers, so the
whole module is pure and runs on a fake clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loadgen.device_model import LOCAL_LIST_MAX, Variable, chunks
from loadgen.protocols import parse_timestamp, v16

if TYPE_CHECKING:
    from loadgen.station import Station

Handler = Callable[["Station", dict[str, Any]], dict[str, Any]]

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


# -- reports (2.0.1) ---------------------------------------------------------------------


def _send_report(station: Station, request_id: int, variables: list[Variable]) -> None:
    """NotifyReport in parts of at most ItemsPerMessage[GetReport], seqNo from 0, tbc on
    every part but the last."""
    parts = chunks([v.report_data() for v in variables], station.config.report_items_per_message)
    now = station.clock.now()
    for seq_no, part in enumerate(parts):
        station.notify(
            *station.messages.notify_report(
                request_id, seq_no, now, part, tbc=seq_no < len(parts) - 1
            )
        )


def get_base_report_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    variables = station.device_model.base_report(payload["reportBase"])
    if variables is None:
        return {"status": "NotSupported"}
    if not variables:
        return {"status": "EmptyResultSet"}
    _send_report(station, payload["requestId"], variables)
    return {"status": "Accepted"}


def get_report_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    variables = station.device_model.report(
        payload.get("componentVariable"), payload.get("componentCriteria")
    )
    if not variables:
        return {"status": "EmptyResultSet"}
    _send_report(station, payload["requestId"], variables)
    return {"status": "Accepted"}


# -- transactions ------------------------------------------------------------------------


def get_transaction_status_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    transaction_id = payload.get("transactionId")
    reply: dict[str, Any] = {"messagesInQueue": station.messages_in_queue(transaction_id)}
    if transaction_id is not None:
        reply["ongoingIndicator"] = station.transaction_by_id(transaction_id) is not None
    return reply


def cost_updated_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    transaction = station.transaction_by_id(payload["transactionId"])
    if transaction is not None:
        transaction.cost = float(payload["totalCost"])
    return {}


# -- local authorisation list ------------------------------------------------------------


def _send_local_list(
    station: Station, version: int, update_type: str, items: list[tuple[str, Any]]
) -> str:
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


def send_local_list_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    items = [
        (entry["idToken"]["idToken"], entry.get("idTokenInfo"))
        for entry in payload.get("localAuthorizationList", ())
    ]
    status = _send_local_list(station, payload["versionNumber"], payload["updateType"], items)
    return {"status": status}


def send_local_list_16(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    items = [
        (entry["idTag"], entry.get("idTagInfo"))
        for entry in payload.get("localAuthorizationList", ())
    ]
    status = _send_local_list(station, payload["listVersion"], payload["updateType"], items)
    return {"status": status}


def get_local_list_version_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return {"versionNumber": station.commands.local_list.version}


def get_local_list_version_16(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return {"listVersion": station.commands.local_list.version}


# -- reservations ------------------------------------------------------------------------


def reservation_on(station: Station, evse_id: int) -> Reservation | None:
    for reservation in station.commands.reservations.values():
        if reservation.evse_id == evse_id:
            return reservation
    return None


def _reserve(
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
    if update is not None and not station.is16:
        station.notify(*station.messages.reservation_status_update(reservation.id, update))


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


def reserve_now_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    group = payload.get("groupIdToken")
    status = _reserve(
        station,
        payload["id"],
        payload.get("evseId"),
        payload["idToken"]["idToken"],
        payload["expiryDateTime"],
        group["idToken"] if group else None,
    )
    return {"status": status}


def reserve_now_16(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    if payload["connectorId"] == 0:
        return {"status": "Rejected"}  # ReserveConnectorZeroSupported: false
    status = _reserve(
        station,
        payload["reservationId"],
        payload["connectorId"],
        payload["idTag"],
        payload["expiryDate"],
        payload.get("parentIdTag"),
    )
    return {"status": status}


def _cancel(station: Station, reservation_id: int) -> dict[str, Any]:
    reservation = station.commands.reservations.get(reservation_id)
    if reservation is None:
        return {"status": "Rejected"}
    _end_reservation(station, reservation, None)
    return {"status": "Accepted"}


def cancel_reservation_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return _cancel(station, payload["reservationId"])


def cancel_reservation_16(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return _cancel(station, payload["reservationId"])


# -- firmware ----------------------------------------------------------------------------


def _firmware_notification(station: Station, status: str, signed: bool) -> Any:
    request_id = station.commands.firmware_request
    if not station.is16:
        return station.messages.firmware_status_notification(status, request_id)
    if signed:
        return v16.signed_firmware_status_notification(status, request_id)
    return v16.firmware_status_notification(status)


def _update_firmware(
    station: Station, request_id: int | None, retrieve: str, install: str | None, signed: bool
) -> bool:
    """Download at ``retrieve``, install at ``install`` once no transaction runs, reboot,
    report Installed after the boot. Returns whether an update under way was cancelled."""
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
        station.notify(*_firmware_notification(station, status, signed))
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
        station.after_boot(*_firmware_notification(station, "Installed", signed))
        station.reboot("FirmwareUpdate")

    retrieve_at = max(now, due(station, retrieve))
    station.schedule(
        retrieve_at, lambda: step("Downloading", lambda: step("Downloaded", installing), DOWNLOAD_S)
    )
    return cancelled


def _update_firmware_request(
    station: Station, payload: dict[str, Any], *, signed: bool
) -> dict[str, Any]:
    """2.0.1 UpdateFirmware and 1.6 SignedUpdateFirmware: the same request and answer."""
    firmware = payload["firmware"]
    cancelled = _update_firmware(
        station,
        payload["requestId"],
        firmware["retrieveDateTime"],
        firmware.get("installDateTime"),
        signed=signed,
    )
    return {"status": "AcceptedCanceled" if cancelled else "Accepted"}


def update_firmware_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return _update_firmware_request(station, payload, signed=False)


def update_firmware_16(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    _update_firmware(station, None, payload["retrieveDate"], None, signed=False)
    return {}


def signed_update_firmware_16(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return _update_firmware_request(station, payload, signed=True)


# -- logs --------------------------------------------------------------------------------


def _upload_log(station: Station, request_id: int | None, diagnostics: bool) -> None:
    """Uploading, then UploadFailure (1.6 GetDiagnostics: UploadFailed): a simulated
    charger has no log to put at the CSMS's location, and saying Uploaded would send the
    CSMS looking for a file that is not there."""
    state = station.commands
    state.log_request = request_id

    def notification(status: str) -> Any:
        state.log_status = status
        if diagnostics:
            return v16.diagnostics_status_notification(status)
        build = (
            v16.log_status_notification
            if station.is16
            else station.messages.log_status_notification
        )
        return build(status, request_id)

    failed = "UploadFailed" if diagnostics else "UploadFailure"
    now = station.clock.now()
    station.schedule(now + 1.0, lambda: station.notify(*notification("Uploading")))
    station.schedule(now + 1.0 + UPLOAD_S, lambda: station.notify(*notification(failed)))


def get_log(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    """2.0.1 GetLog and the 1.6 security extension's, the same message."""
    _upload_log(station, payload["requestId"], diagnostics=False)
    filename = f"{station.charger.id}-{payload['logType']}-{payload['requestId']}.log"
    return {"status": "Accepted", "filename": filename[:255]}


def get_diagnostics_16(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    _upload_log(station, None, diagnostics=True)
    return {"fileName": f"{station.charger.id}-diagnostics.log"[:255]}


def trigger(station: Station, message: str) -> bool:
    """TriggerMessage for the status notifications of this module; False: not one of them."""
    state = station.commands
    if message == "FirmwareStatusNotification":
        status = state.firmware_status
        if status == "Installed" or (station.is16 and status == "DownloadScheduled"):
            status = "Idle"  # 1.6 has no DownloadScheduled
        if station.is16:
            station.notify(*v16.firmware_status_notification(status))
        else:
            # requestId only while an update runs (L01.FR.20)
            request = state.firmware_request if status != "Idle" else None
            station.notify(*station.messages.firmware_status_notification(status, request))
        return True
    if message == "LogStatusNotification" and not station.is16:
        status = "Uploading" if state.log_status == "Uploading" else "Idle"
        request = state.log_request if status != "Idle" else None
        station.notify(*station.messages.log_status_notification(status, request))
        return True
    if message == "DiagnosticsStatusNotification" and station.is16:
        status = "Uploading" if state.log_status == "Uploading" else "Idle"
        station.notify(*v16.diagnostics_status_notification(status))
        return True
    return False


def extended_trigger_16(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    """The 1.6 security extension's TriggerMessage; LogStatusNotification is its own."""
    message = payload["requestedMessage"]
    if message == "LogStatusNotification":
        state = station.commands
        status = "Uploading" if state.log_status == "Uploading" else "Idle"
        request = state.log_request if status != "Idle" else None
        station.notify(*v16.log_status_notification(status, request))
        return {"status": "Accepted"}
    if message == "SignChargePointCertificate":
        return {"status": "Rejected"}  # no key pair to have signed (see certificates)
    status = station.trigger_message(message, payload.get("connectorId"))
    return {"status": "Accepted" if status == "Accepted" else "Rejected"}


# -- monitoring (2.0.1) ------------------------------------------------------------------
# Monitors are kept and reported; they never fire (no NotifyEvent): a simulated charger's
# variables change only when the CSMS sets them.


def set_variable_monitoring_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    state = station.commands
    results = []
    for item in payload["setMonitoringData"]:
        variable, status = station.device_model.lookup(item["component"], item["variable"])
        result: dict[str, Any] = {
            "type": item["type"],
            "severity": item["severity"],
            "component": item["component"],
            "variable": item["variable"],
        }
        if variable is not None:
            monitor_id = item.get("id")
            if monitor_id is not None and monitor_id not in state.monitors:
                status = "Rejected"  # an id to replace that we never gave out
            else:
                if monitor_id is None:
                    monitor_id = next(state.monitor_ids)
                settings = {
                    "id": monitor_id,
                    "transaction": bool(item.get("transaction", False)),
                    "value": item["value"],
                    "type": item["type"],
                    "severity": item["severity"],
                }
                if station.is21:  # 2.1 requires it: the CSMS's own are CustomMonitor
                    settings["eventNotificationType"] = "CustomMonitor"
                state.monitors[monitor_id] = (variable, settings)
                result["id"] = monitor_id
        result["status"] = status
        results.append(result)
    return {"setMonitoringResult": results}


def get_monitoring_report_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    criteria = payload.get("monitoringCriteria")
    wanted = payload.get("componentVariable")
    kinds = {
        "ThresholdMonitoring": ("UpperThreshold", "LowerThreshold"),
        "DeltaMonitoring": ("Delta",),
        "PeriodicMonitoring": ("Periodic", "PeriodicClockAligned"),
    }
    grouped: dict[int, tuple[Variable, list[dict[str, Any]]]] = {}
    for variable, settings in station.commands.monitors.values():
        if criteria and not any(settings["type"] in kinds[c] for c in criteria):
            continue
        if wanted and variable not in station.device_model.report(wanted, None):
            continue
        grouped.setdefault(id(variable), (variable, []))[1].append(settings)
    if not grouped:
        return {"status": "EmptyResultSet"}
    monitor = [
        {
            "component": variable.component_ref(),
            "variable": variable.variable_ref(),
            "variableMonitoring": settings,
        }
        for variable, settings in grouped.values()
    ]
    parts = chunks(monitor, station.config.report_items_per_message)
    now = station.clock.now()
    for seq_no, part in enumerate(parts):
        station.notify(
            *station.messages.notify_monitoring_report(
                payload["requestId"], seq_no, now, part, tbc=seq_no < len(parts) - 1
            )
        )
    return {"status": "Accepted"}


def clear_variable_monitoring_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    monitors = station.commands.monitors
    results = [
        {"id": monitor_id, "status": "Accepted" if monitors.pop(monitor_id, None) else "NotFound"}
        for monitor_id in payload["id"]
    ]
    return {"clearMonitoringResult": results}


def set_monitoring_base_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    state = station.commands
    state.monitoring_base = payload["monitoringBase"]
    if state.monitoring_base != "All":  # FactoryDefault / HardWiredOnly drop custom monitors
        state.monitors.clear()
    return {"status": "Accepted"}


def set_monitoring_level_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    severity = payload["severity"]
    if not 0 <= severity <= 9:
        return {"status": "Rejected"}
    station.commands.monitoring_level = severity
    return {"status": "Accepted"}


# -- display messages (2.0.1) ------------------------------------------------------------


def set_display_message_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    message = payload["message"]
    transaction_id = message.get("transactionId")
    if transaction_id is not None and station.transaction_by_id(transaction_id) is None:
        return {"status": "UnknownTransaction"}
    station.commands.display_messages[message["id"]] = message
    return {"status": "Accepted"}


def get_display_messages_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    ids = payload.get("id")
    found = [
        message
        for message in station.commands.display_messages.values()
        if (ids is None or message["id"] in ids)
        and payload.get("priority") in (None, message["priority"])
        and payload.get("state") in (None, message.get("state"))
    ]
    if not found:
        return {"status": "Unknown"}
    parts = chunks(found, station.config.report_items_per_message)
    for index, part in enumerate(parts):
        station.notify(
            *station.messages.notify_display_messages(
                payload["requestId"], part, tbc=index < len(parts) - 1
            )
        )
    return {"status": "Accepted"}


def clear_display_message_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    removed = station.commands.display_messages.pop(payload["id"], None)
    return {"status": "Accepted" if removed is not None else "Unknown"}


# -- customer information (2.0.1) --------------------------------------------------------


def customer_information_201(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    """What the station holds about a customer: its local-list entry and its transactions
    running here. ``clear`` removes the local-list entry (transactions are not erased)."""
    token = (payload.get("idToken") or {}).get("idToken")
    identified = token is not None or payload.get("customerIdentifier")
    if not identified and payload.get("customerCertificate") is None:
        return {"status": "Invalid"}  # nobody named (N09.FR.09)
    found = []
    local = station.commands.local_list
    if token is not None and token in local.entries:
        found.append(f"local list: {token}")
        if payload["clear"]:
            local.entries.pop(token)
    found += [
        f"transaction {t.transaction_id} on EVSE {t.evse_id}"
        for t in station.transactions
        if token is not None and t.token == token
    ]
    if payload["report"]:
        data = "; ".join(found) if found else "No data"
        station.notify(
            *station.messages.notify_customer_information(
                payload["requestId"], 0, station.clock.now(), data[:512]
            )
        )
    return {"status": "Accepted"}


# -- what a simulated charger has nothing to act on --------------------------------------


def _status(status: str) -> Handler:
    def handler(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": status}

    return handler


HANDLERS_201: dict[str, Handler] = {
    "GetBaseReport": get_base_report_201,
    "GetReport": get_report_201,
    "GetTransactionStatus": get_transaction_status_201,
    "CostUpdated": cost_updated_201,
    "SendLocalList": send_local_list_201,
    "GetLocalListVersion": get_local_list_version_201,
    "ReserveNow": reserve_now_201,
    "CancelReservation": cancel_reservation_201,
    "UpdateFirmware": update_firmware_201,
    "GetLog": get_log,
    "SetVariableMonitoring": set_variable_monitoring_201,
    "GetMonitoringReport": get_monitoring_report_201,
    "ClearVariableMonitoring": clear_variable_monitoring_201,
    "SetMonitoringBase": set_monitoring_base_201,
    "SetMonitoringLevel": set_monitoring_level_201,
    "SetDisplayMessage": set_display_message_201,
    "GetDisplayMessages": get_display_messages_201,
    "ClearDisplayMessage": clear_display_message_201,
    "CustomerInformation": customer_information_201,
    # No certificate store: nothing installed, nothing to delete, no CSR was sent.
    "InstallCertificate": _status("Rejected"),
    "GetInstalledCertificateIds": _status("NotFound"),
    "DeleteCertificate": _status("NotFound"),
    "CertificateSigned": _status("Rejected"),
    # The connection is the load tester's (its URL and security options), not the CSMS's.
    "SetNetworkProfile": _status("Rejected"),
    # Only a local controller publishes firmware.
    "PublishFirmware": _status("Rejected"),
    "UnpublishFirmware": _status("NoFirmware"),
}

HANDLERS_16: dict[str, Handler] = {
    "SendLocalList": send_local_list_16,
    "GetLocalListVersion": get_local_list_version_16,
    "ReserveNow": reserve_now_16,
    "CancelReservation": cancel_reservation_16,
    "UpdateFirmware": update_firmware_16,
    "GetDiagnostics": get_diagnostics_16,
    # The security extension (the ``ocpp`` package ships its schemas with 1.6).
    "SignedUpdateFirmware": signed_update_firmware_16,
    "GetLog": get_log,
    "ExtendedTriggerMessage": extended_trigger_16,
    "InstallCertificate": _status("Rejected"),
    "GetInstalledCertificateIds": _status("NotFound"),
    "DeleteCertificate": _status("NotFound"),
    "CertificateSigned": _status("Rejected"),
}
