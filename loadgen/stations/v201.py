"""An OCPP 2.0.1 station: its messages and the CALLs it answers (2.1 extends it).

A transaction is TransactionEvent Started / Updated / Ended, known to the CSMS by the
station's own transactionId and ordered by seqNo, so every message is built when it is
queued (``offline=true`` when the link was down); the connector status is Available /
Occupied / Reserved / Unavailable and the charging state goes in the TransactionEvents.
The builders are the station's (``station.messages``), so :mod:`.v21` reuses all of this
with 2.1's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from loadgen import commands, smart_charging_station
from loadgen.device_model import Variable, chunks
from loadgen.stations.base import ACCEPTED, Readings, Rules, reading_context, verdict

if TYPE_CHECKING:
    from collections.abc import Callable

    from loadgen.station import Evse, Station, Transaction


class Rules201(Rules):
    #: what a SetVariableMonitoring's monitor carries besides what the CSMS set
    monitor_fields: ClassVar[dict[str, Any]] = {}
    #: how connector status is reported unless StationConfig.connector_status says:
    #: StatusNotification (2.0.1's way; NotifyEvent AvailabilityState its alternative)
    connector_status_message: ClassVar[str] = "StatusNotification"

    def boot_notification(self, station: Station) -> dict[str, Any]:
        c = station.charger
        return station.messages.boot_notification(
            c.vendor, c.model, c.serial_number or None, c.firmware, station.boot_reason
        )[1]

    def status_notification(
        self, station: Station, evse_id: int, connector_id: int, status: str, timestamp: float
    ) -> dict[str, Any]:
        return station.messages.status_notification(evse_id, connector_id, status, timestamp)[1]

    def connector_status(
        self, station: Station, evse_id: int, connector_id: int, status: str, timestamp: float
    ) -> tuple[str, dict[str, Any]]:
        """A StatusNotification, or a NotifyEvent with the connector's AvailabilityState
        (one event, seqNo 0: each is a report of its own)."""
        message = station.config.connector_status or self.connector_status_message
        if message != "NotifyEvent":
            return super().connector_status(station, evse_id, connector_id, status, timestamp)
        station.last_event_id += 1
        event = station.messages.availability_event(
            station.last_event_id, timestamp, evse_id, connector_id, status
        )
        return station.messages.notify_event(0, timestamp, [event])

    def authorize(self, station: Station, transaction: Transaction) -> dict[str, Any]:
        return station.messages.authorize(transaction.token, transaction.token_type)[1]

    def transaction_fields(
        self,
        station: Station,
        transaction: Transaction,
        evse: Evse,
        *,
        start: bool = False,
        limit_set: bool = False,
    ) -> dict[str, Any]:
        """A TransactionEvent's fields beyond 2.0.1's (2.1: cost, limit): none."""
        return {}

    def read_limit(self, station: Station, transaction: Transaction, reply: dict[str, Any]) -> None:
        """A TransactionEventResponse's transactionLimit (2.1): 2.0.1 has none."""

    def updated(
        self, station: Station, transaction: Transaction
    ) -> Callable[[dict[str, Any]], None] | None:
        """What reads the answer to an Updated TransactionEvent: a CSMS may withdraw the
        token's authorization there too (idTokenInfo), and the transaction then ends."""

        def read(reply: dict[str, Any]) -> None:
            self._token_verdict(station, transaction, reply)

        return read

    def queue_start(
        self, station: Station, evse: Evse, transaction: Transaction, readings: Readings
    ) -> None:
        now = transaction.started_stamp
        assert now is not None  # set when the transaction began
        energy, power, soc = readings
        trigger = "RemoteStart" if transaction.remote_start_id is not None else "Authorized"
        m = station.messages
        _, payload = m.transaction_event(
            "Started",
            transaction.local_id,
            next(transaction.seq_no),
            now,
            trigger,
            charging_state="Charging",
            remote_start_id=transaction.remote_start_id,
            reservation_id=transaction.reservation_id,
            evse_id=evse.id,
            connector_id=transaction.connector_id,
            token=m.id_token(transaction.token, transaction.token_type),
            # The CSMS learns from this that the event happened while it could not hear it.
            offline=station.offline,
            meter_values=[
                m.meter_value(now, m.sampled_values(energy, power, soc, "Transaction.Begin"))
            ],
            **self.transaction_fields(station, transaction, evse, start=True),
        )

        def started(reply: dict[str, Any]) -> None:
            station.emit("start_acknowledged", {"transaction": transaction, "reply": reply})
            self._token_verdict(station, transaction, reply)
            self.read_limit(station, transaction, reply)

        station.queue_transactional("TransactionEvent", transaction, lambda: payload, started)

    def _token_verdict(
        self, station: Station, transaction: Transaction, reply: dict[str, Any]
    ) -> None:
        """A TransactionEvent reply may carry the CSMS's verdict on the token."""
        if not isinstance(reply.get("idTokenInfo"), dict):
            return
        status = verdict(reply, "idTokenInfo")
        station.report_authorization("TransactionEvent", transaction, status)
        if status != ACCEPTED:
            station.deauthorize(transaction, status)

    def queue_update(
        self,
        station: Station,
        evse: Evse,
        transaction: Transaction,
        trigger: str,
        readings: Readings,
    ) -> None:
        energy, power, soc = readings
        now = station.wall_clock.now()
        m = station.messages
        _, payload = m.transaction_event(
            "Updated",
            transaction.local_id,
            next(transaction.seq_no),
            now,
            trigger,
            charging_state=transaction.charging_state,
            offline=station.offline,
            meter_values=[
                m.meter_value(now, m.sampled_values(energy, power, soc, reading_context(trigger)))
            ],
            **self.transaction_fields(station, transaction, evse, limit_set=trigger == "LimitSet"),
        )
        station.queue_transactional(
            "TransactionEvent", transaction, lambda: payload, self.updated(station, transaction)
        )

    def queue_end(
        self, station: Station, evse: Evse, transaction: Transaction, trigger: str
    ) -> None:
        assert evse.physics is not None
        now = transaction.ended_stamp if transaction.ended_stamp is not None else 0.0
        energy = evse.register.wh
        soc = round(evse.physics.ev.soc * 100, 1)
        m = station.messages
        _, payload = m.transaction_event(
            "Ended",
            transaction.local_id,
            next(transaction.seq_no),
            now,
            trigger,
            charging_state="EVConnected",
            stopped_reason=transaction.stop_reason,
            offline=station.offline,
            meter_values=[
                m.meter_value(now, m.sampled_values(energy, 0.0, soc, "Transaction.End"))
            ],
            **self.transaction_fields(station, transaction, evse),
        )
        station.queue_transactional(
            "TransactionEvent", transaction, lambda: payload, station.end_acknowledged(transaction)
        )

    def trigger(self, station: Station, message: str) -> bool:
        state = station.commands
        if message == "FirmwareStatusNotification":
            status = "Idle" if state.firmware_status == "Installed" else state.firmware_status
            # requestId only while an update runs (L01.FR.20)
            request = state.firmware_request if status != "Idle" else None
            station.notify(*station.messages.firmware_status_notification(status, request))
            return True
        if message == "LogStatusNotification":
            status = "Uploading" if state.log_status == "Uploading" else "Idle"
            request = state.log_request if status != "Idle" else None
            station.notify(*station.messages.log_status_notification(status, request))
            return True
        return False

    def trigger_readings(self, station: Station, evse: Evse, message: str) -> None:
        transaction = evse.transaction
        if message == "TransactionEvent":
            # the running transaction's Updated event, triggerReason Trigger (F06)
            if transaction is not None and not transaction.stopping:
                station.meter_update(evse, "Trigger")
            return
        # MeterValues: a MeterValuesRequest of the EVSE, in a transaction or not (F06)
        energy, power, soc = station.readings_now(evse)
        m = station.messages
        sampled = m.sampled_values(energy, power, soc, "Trigger")
        station.notify(*m.meter_values(evse.id, [m.meter_value(station.now_wall(), sampled)]))


RULES = Rules201()


# -- what the CSMS asks ----------------------------------------------------------------


def request_start(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    profile = smart_charging_station.remote_start_profile(
        station, payload, station.messages.charging_profile_from, with_info=True
    )
    if isinstance(profile, dict):
        return profile  # Rejected, with the reason
    token = payload["idToken"]
    # the CSMS's token as it gave it: its type goes back in the TransactionEvent
    transaction = station.remote_start(
        token["idToken"], payload.get("evseId"), payload["remoteStartId"], token["type"]
    )
    if transaction is not None and profile is not None:
        smart_charging_station.adopt_remote_start_profile(station, profile, transaction)
    return {"status": "Accepted" if transaction is not None else "Rejected"}


def request_stop(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    transaction = station.transaction_by_id(payload["transactionId"])
    if transaction is None:
        return {"status": "Rejected"}
    station.stop_session(transaction.evse_id, "Remote", trigger="RemoteStop")
    return {"status": "Accepted"}


def reset(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    if "evseId" in payload and payload["evseId"] not in station.evses:
        return {"status": "Rejected"}  # an EVSE we do not have: not a reason to reboot all
    immediate = payload["type"] == "Immediate"
    return {"status": station.reset(immediate, "ImmediateReset", payload.get("evseId"))}


def change_availability(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    evse = (payload.get("evse") or {}).get("id")
    operative = payload["operationalStatus"] == "Operative"
    return {"status": station.change_availability(evse, operative)}


def trigger_message(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    evse = (payload.get("evse") or {}).get("id")
    return {"status": station.trigger_message(payload["requestedMessage"], evse)}


def get_variables(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    results = []
    for item in payload["getVariableData"]:
        variable, status = station.device_model.lookup(item["component"], item["variable"])
        result: dict[str, Any] = {"component": item["component"], "variable": item["variable"]}
        if variable is not None and item.get("attributeType", "Actual") != "Actual":
            status = "NotSupportedAttributeType"  # only Actual values are kept
        result["attributeStatus"] = status
        if variable is not None and status == "Accepted":
            result["attributeValue"] = variable.read()
        results.append(result)
    return {"getVariableResult": results}


def set_variables(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    results = []
    for item in payload["setVariableData"]:
        variable, status = station.device_model.lookup(item["component"], item["variable"])
        if variable is not None:
            if item.get("attributeType", "Actual") != "Actual":
                status = "NotSupportedAttributeType"
            elif variable.write is None:
                status = "Rejected"  # read-only
            else:
                status = variable.write(item["attributeValue"])
        results.append(
            {
                "component": item["component"],
                "variable": item["variable"],
                "attributeStatus": status,
            }
        )
    return {"setVariableResult": results}


def unlock_connector(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    evse = station.evses.get(payload["evseId"])
    if evse is None:
        return {"status": "UnknownConnector"}
    if evse.transaction is not None:
        return {"status": "OngoingAuthorizedTransaction"}
    return {"status": "Unlocked"}


# -- local authorisation list ------------------------------------------------------------


def send_local_list(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    items = [
        (entry["idToken"]["idToken"], entry.get("idTokenInfo"))
        for entry in payload.get("localAuthorizationList", ())
    ]
    status = commands.send_local_list(
        station, payload["versionNumber"], payload["updateType"], items
    )
    return {"status": status}


def get_local_list_version(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return {"versionNumber": station.commands.local_list.version}


# -- reservations, firmware, logs --------------------------------------------------------


def reserve_now(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    group = payload.get("groupIdToken")
    status = commands.reserve(
        station,
        payload["id"],
        payload.get("evseId"),
        payload["idToken"]["idToken"],
        payload["expiryDateTime"],
        group["idToken"] if group else None,
    )
    return {"status": status}


def cancel_reservation(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return commands.cancel_reservation(station, payload["reservationId"])


def update_firmware(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    request_id = payload["requestId"]
    build = station.messages.firmware_status_notification
    return commands.update_firmware_request(
        station, payload, lambda status: build(status, request_id)
    )


def get_log(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    return commands.get_log(station, payload, station.messages.log_status_notification)


# -- reports -----------------------------------------------------------------------------


def _send_report(station: Station, request_id: int, variables: list[Variable]) -> None:
    """NotifyReport in parts of at most ItemsPerMessage[GetReport], seqNo from 0, tbc on
    every part but the last."""
    parts = chunks([v.report_data() for v in variables], station.config.report_items_per_message)
    now = station.now_wall()  # generatedAt: the CSMS reads real time
    for seq_no, part in enumerate(parts):
        station.notify(
            *station.messages.notify_report(
                request_id, seq_no, now, part, tbc=seq_no < len(parts) - 1
            )
        )


def get_base_report(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    variables = station.device_model.base_report(payload["reportBase"])
    if variables is None:
        return {"status": "NotSupported"}
    if not variables:
        return {"status": "EmptyResultSet"}
    _send_report(station, payload["requestId"], variables)
    return {"status": "Accepted"}


def get_report(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    variables = station.device_model.report(
        payload.get("componentVariable"), payload.get("componentCriteria")
    )
    if not variables:
        return {"status": "EmptyResultSet"}
    _send_report(station, payload["requestId"], variables)
    return {"status": "Accepted"}


# -- transactions ------------------------------------------------------------------------


def get_transaction_status(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    transaction_id = payload.get("transactionId")
    reply: dict[str, Any] = {"messagesInQueue": station.messages_in_queue(transaction_id)}
    if transaction_id is not None:
        reply["ongoingIndicator"] = station.transaction_by_id(transaction_id) is not None
    return reply


def cost_updated(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    transaction = station.transaction_by_id(payload["transactionId"])
    if transaction is not None:
        transaction.cost = float(payload["totalCost"])
    return {}


# -- monitoring --------------------------------------------------------------------------
# Monitors are kept and reported; they never fire (no NotifyEvent): a simulated charger's
# variables change only when the CSMS sets them.


def set_variable_monitoring(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
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
                settings.update(station.rules.monitor_fields)
                state.monitors[monitor_id] = (variable, settings)
                result["id"] = monitor_id
        result["status"] = status
        results.append(result)
    return {"setMonitoringResult": results}


def get_monitoring_report(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
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
    now = station.now_wall()
    for seq_no, part in enumerate(parts):
        station.notify(
            *station.messages.notify_monitoring_report(
                payload["requestId"], seq_no, now, part, tbc=seq_no < len(parts) - 1
            )
        )
    return {"status": "Accepted"}


def clear_variable_monitoring(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    monitors = station.commands.monitors
    results = [
        {"id": monitor_id, "status": "Accepted" if monitors.pop(monitor_id, None) else "NotFound"}
        for monitor_id in payload["id"]
    ]
    return {"clearMonitoringResult": results}


def set_monitoring_base(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    state = station.commands
    state.monitoring_base = payload["monitoringBase"]
    if state.monitoring_base != "All":  # FactoryDefault / HardWiredOnly drop custom monitors
        state.monitors.clear()
    return {"status": "Accepted"}


def set_monitoring_level(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    severity = payload["severity"]
    if not 0 <= severity <= 9:
        return {"status": "Rejected"}
    station.commands.monitoring_level = severity
    return {"status": "Accepted"}


# -- display messages --------------------------------------------------------------------


def set_display_message(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    message = payload["message"]
    transaction_id = message.get("transactionId")
    if transaction_id is not None and station.transaction_by_id(transaction_id) is None:
        return {"status": "UnknownTransaction"}
    station.commands.display_messages[message["id"]] = message
    return {"status": "Accepted"}


def get_display_messages(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
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


def clear_display_message(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
    removed = station.commands.display_messages.pop(payload["id"], None)
    return {"status": "Accepted" if removed is not None else "Unknown"}


# -- customer information ----------------------------------------------------------------


def customer_information(station: Station, payload: dict[str, Any]) -> dict[str, Any]:
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
                payload["requestId"], 0, station.now_wall(), data[:512]
            )
        )
    return {"status": "Accepted"}


Rules201.handlers = {
    **smart_charging_station.HANDLERS_201,
    "RequestStartTransaction": request_start,
    "RequestStopTransaction": request_stop,
    "Reset": reset,
    "ChangeAvailability": change_availability,
    "TriggerMessage": trigger_message,
    "GetVariables": get_variables,
    "SetVariables": set_variables,
    "UnlockConnector": unlock_connector,
    "ClearCache": commands.clear_cache,
    "DataTransfer": commands.data_transfer,
    "GetBaseReport": get_base_report,
    "GetReport": get_report,
    "GetTransactionStatus": get_transaction_status,
    "CostUpdated": cost_updated,
    "SendLocalList": send_local_list,
    "GetLocalListVersion": get_local_list_version,
    "ReserveNow": reserve_now,
    "CancelReservation": cancel_reservation,
    "UpdateFirmware": update_firmware,
    "GetLog": get_log,
    "SetVariableMonitoring": set_variable_monitoring,
    "GetMonitoringReport": get_monitoring_report,
    "ClearVariableMonitoring": clear_variable_monitoring,
    "SetMonitoringBase": set_monitoring_base,
    "SetMonitoringLevel": set_monitoring_level,
    "SetDisplayMessage": set_display_message,
    "GetDisplayMessages": get_display_messages,
    "ClearDisplayMessage": clear_display_message,
    "CustomerInformation": customer_information,
    **commands.NO_CERTIFICATE_STORE,
    # The connection is the load tester's (its URL and security options), not the CSMS's.
    "SetNetworkProfile": commands.status("Rejected"),
    # Only a local controller publishes firmware.
    "PublishFirmware": commands.status("Rejected"),
    "UnpublishFirmware": commands.status("NoFirmware"),
}
