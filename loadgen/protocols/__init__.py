"""One module per OCPP version, and what they share.

Each version module (:mod:`.v16`, :mod:`.v201`, :mod:`.v21`) builds the messages of that
version; :func:`module_for` picks a version's module. :class:`Version` describes a version:
its name, its WebSocket subprotocol, where the ``ocpp`` package keeps its JSON schemas, how
it spells the RPC error codes and whether OCPP-J's 2.1 frames (SEND, CALLRESULTERROR) exist.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from loadgen.ocppj import ErrorCode


@dataclass(frozen=True)
class Version:
    name: str
    subprotocol: str
    #: the folder of ``ocpp/<package>/schemas`` holding this version's JSON schemas
    schema_package: str
    #: request schema file name for an action; responses are always ``<Action>Response``
    request_schema_suffix: str
    #: error codes this version does not know, mapped to the nearest one it does
    error_code_aliases: tuple[tuple[str, str], ...] = ()
    #: OCPP-J 2.1's SEND and CALLRESULTERROR frames exist (:func:`loadgen.ocppj.parse`)
    extended_rpc: bool = False

    def error_code(self, code: str) -> str:
        """Spell an RPC error code the way this version's receivers expect."""
        return dict(self.error_code_aliases).get(code, code)


OCPP16 = Version(
    name="1.6",
    subprotocol="ocpp1.6",
    schema_package="v16",
    request_schema_suffix="",
    error_code_aliases=(
        # 1.6 has neither RpcFrameworkError nor MessageTypeNotSupported.
        (ErrorCode.RPC_FRAMEWORK_ERROR, ErrorCode.PROTOCOL_ERROR),
        (ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED, ErrorCode.PROTOCOL_ERROR),
        (ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION, ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION_16),
    ),
)
OCPP201 = Version(
    name="2.0.1",
    subprotocol="ocpp2.0.1",
    schema_package="v201",
    request_schema_suffix="Request",
)
#: OCPP 2.1: the 2.0.1 message set and more, plus two RPC frames (SEND, CALLRESULTERROR)
OCPP21 = Version(
    name="2.1",
    subprotocol="ocpp2.1",
    schema_package="v21",
    request_schema_suffix="Request",
    extended_rpc=True,
)

VERSIONS: dict[str, Version] = {v.name: v for v in (OCPP16, OCPP201, OCPP21)}

#: the actions a charging station sends, per version (the specifications' message
#: directions: the schemas do not say); every other action of a version is the CSMS's
STATION_ACTIONS: dict[str, frozenset[str]] = {
    OCPP201.name: frozenset({
        "Authorize", "BootNotification", "ClearedChargingLimit", "DataTransfer",
        "FirmwareStatusNotification", "Get15118EVCertificate", "GetCertificateStatus",
        "Heartbeat", "LogStatusNotification", "MeterValues", "NotifyChargingLimit",
        "NotifyCustomerInformation", "NotifyDisplayMessages", "NotifyEVChargingNeeds",
        "NotifyEVChargingSchedule", "NotifyEvent", "NotifyMonitoringReport", "NotifyReport",
        "PublishFirmwareStatusNotification", "ReportChargingProfiles",
        "ReservationStatusUpdate", "SecurityEventNotification", "SignCertificate",
        "StatusNotification", "TransactionEvent",
    }),
    OCPP16.name: frozenset({
        "Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification",
        "FirmwareStatusNotification", "Heartbeat", "LogStatusNotification", "MeterValues",
        "SecurityEventNotification", "SignCertificate", "SignedFirmwareStatusNotification",
        "StartTransaction", "StatusNotification", "StopTransaction",
    }),
}  # fmt: skip
# 2.1: 2.0.1's and the new ones a station sends (it opens periodic event streams itself)
STATION_ACTIONS[OCPP21.name] = STATION_ACTIONS[OCPP201.name] | {
    "BatterySwap", "ClosePeriodicEventStream", "GetCertificateChainStatus", "NotifyDERAlarm",
    "NotifyDERStartStop", "NotifyPeriodicEventStream", "NotifyPriorityCharging",
    "NotifySettlement", "OpenPeriodicEventStream", "PullDynamicScheduleUpdate",
    "ReportDERControl", "VatNumberValidation",
}  # fmt: skip
BY_SUBPROTOCOL: dict[str, Version] = {v.subprotocol: v for v in VERSIONS.values()}


def get_version(name: str) -> Version:
    """The :class:`Version` called ``name`` ("1.6", "2.0.1", "2.1"; "ocpp1.6" is accepted too)."""
    version = VERSIONS.get(name) or BY_SUBPROTOCOL.get(name)
    if version is None:
        known = ", ".join(VERSIONS)
        raise ValueError(f"unknown OCPP version {name!r} (known: {known})")
    return version


def module_for(version: Version) -> ModuleType:
    """The builders module of ``version`` (:mod:`.v16`, :mod:`.v201`, :mod:`.v21`): the one
    place a version picks its messages."""
    return importlib.import_module(f"{__name__}.{version.schema_package}")


def iso_timestamp(when: float | datetime) -> str:
    """An OCPP dateTime: UTC, millisecond precision, ``Z`` suffix."""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, tz=UTC)
    elif when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """Parse an OCPP dateTime (RFC 3339) into an aware UTC datetime."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


#: a builder's result: the action and its payload
Request = tuple[str, dict[str, Any]]

# Measurands, the same in 1.6 and 2.0.1.
ENERGY_REGISTER = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"
SOC = "SoC"


def compact(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without its ``None`` fields: optional fields are left out, not null."""
    return {key: value for key, value in payload.items() if value is not None}


def timestamp_text(timestamp: float | str) -> str:
    """An epoch time as an OCPP dateTime; text is taken as it is."""
    return timestamp if isinstance(timestamp, str) else iso_timestamp(timestamp)
