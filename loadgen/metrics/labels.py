"""The label values of the metrics: closed sets, and the functions that map what the link,
the stations and the CSMS say onto them (a value outside a set becomes "Other" / "other":
the series stay bounded whatever a CSMS sends)."""

from __future__ import annotations

import enum
import functools
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from loadgen import link as links
from loadgen.protocols import VERSIONS, schemas
from loadgen.stations.base import NO_TRANSACTION_ID

OTHER = "Other"

OUTCOMES = (links.RESULT, links.ERROR, links.TIMEOUT, links.DISCONNECTED)
SITE_STATES = ("offline", "booting", "available", "charging", "unavailable", "failed")
DISCONNECT_REASONS = frozenset(
    {
        links.CLOSED_LOCALLY,
        links.CLOSED_BY_SERVER,
        links.CONNECTION_LOST,
        links.MESSAGE_TOO_BIG,
        links.WEBSOCKET_ERROR,
        links.INTERNAL_ERROR,
    }
)
#: reconnect reasons: the disconnect reasons, "reset" (the CSMS asked) and "other"
RECONNECT_REASONS = DISCONNECT_REASONS | {"reset", "other"}
CONNECT_OUTCOMES = frozenset(
    {"ok", "refused", "timeout", "dns", "network", "tls", "handshake", "subprotocol"}
    | {"too_many_open_files"}
    | {f"http_{code}" for code in (400, 401, 403, 404, 426, 429, 500, 502, 503, 504)}
)
PROTOCOL_ERROR_KINDS = frozenset(
    {
        "malformed_frame",
        "binary_frame",
        "late_reply",
        "unknown_reply_id",
        "invalid_result",
        "invalid_call",
        # OCPP 2.1: the CSMS rejected a CALLRESULT of ours; a CSMS SEND was invalid / failed
        "callresulterror",
        "invalid_send",
        "send_failed",
        links.MESSAGE_TOO_BIG,
        links.WEBSOCKET_ERROR,
    }
)
COORDINATION_OPERATIONS = frozenset(
    {"lease", "release", "renew", "idToken", "transaction_id", "ledger", "run"}
)
TRANSACTION_OUTCOMES = ("completed", "dropped", "unacknowledged")
#: idTokenInfo / idTagInfo statuses: 2.0.1's AuthorizationStatusEnumType and 1.6's
#: AuthorizationStatus (a subset); anything else is "other"
AUTHORIZATION_STATUSES = (
    "Accepted",
    "Blocked",
    "ConcurrentTx",
    "Expired",
    "Invalid",
    "NoCredit",
    "NotAllowedTypeEVSE",
    "NotAtThisLocation",
    "NotAtThisTime",
    "Unknown",
    # not the CSMS's word: a 1.6 StartTransaction Accepted without a usable transactionId
    NO_TRANSACTION_ID,
)
#: the messages whose replies carry a verdict
AUTHORIZATION_MESSAGES = ("Authorize", "TransactionEvent", "StartTransaction")
#: the OCPP versions a connection may speak ("1.6", "2.0.1", "2.1")
OCPP_VERSIONS = tuple(VERSIONS)
MESSAGE_DIRECTIONS = ("sent", "received")
#: OCPP-J message types; SEND and CALLRESULTERROR exist in 2.1 only
MESSAGE_TYPES = ("call", "result", "error", "send", "callresulterror")


@functools.cache
def _ocpp_enums() -> tuple[ModuleType, ...]:
    """The ``ocpp`` package's enumerations of each version, read from their own files:
    importing ``ocpp.v21.enums`` runs the ``ocpp.v21`` package first, its ChargePoint, call
    classes and jsonschema (0.6 s of every Locust process's start, 0.1 s this way), none of
    which the enumerations need (they import nothing)."""
    spec = importlib.util.find_spec("ocpp")
    if spec is None or spec.origin is None:
        return ()
    modules = []
    for version in ("v16", "v201", "v21"):
        path = Path(spec.origin).parent / version / "enums.py"
        enums = importlib.util.spec_from_file_location(f"loadgen._ocpp_{version}_enums", path)
        if enums is None or enums.loader is None:
            continue
        module = importlib.util.module_from_spec(enums)
        enums.loader.exec_module(module)
        modules.append(module)
    return tuple(modules)


@functools.cache
def known_actions() -> frozenset[str]:
    """Every action OCPP 1.6, 2.0.1 and 2.1 define (from the ``ocpp`` package): its
    enumerations, and its schemas, which also have the SEND-only 2.1 message
    NotifyPeriodicEventStream the enumeration lacks."""
    names: set[str] = {a for version in VERSIONS.values() for a in schemas.actions(version)}
    for module in _ocpp_enums():
        action = getattr(module, "Action", None)
        if action is not None:
            names.update(member.value for member in action)
    return frozenset(names)


@functools.cache
def known_statuses() -> frozenset[str]:
    """Every value of the ``ocpp`` package's status enumerations (Accepted, Rejected, ...)."""
    values: set[str] = set()
    for module in _ocpp_enums():
        namespace = vars(module)
        for name, value in namespace.items():
            if isinstance(value, type) and issubclass(value, enum.Enum) and "Status" in name:
                values.update(str(member.value) for member in value)
    return frozenset(values)


def version_label(version: str) -> str:
    return version if version in OCPP_VERSIONS else "other"


def action_label(action: str) -> str:
    return action if action in known_actions() else OTHER


def error_code_label(code: str | None) -> str:
    return code if code in links.KNOWN_ERROR_CODES else OTHER


def status_label(reply: Any) -> str:
    """The ``status`` of a CALLRESULT payload; "result" when it has none."""
    status = reply.get("status") if isinstance(reply, dict) else None
    if status is None:
        return "result"
    return status if isinstance(status, str) and status in known_statuses() else OTHER


def authorization_labels(status: Any, message: Any) -> tuple[str, str]:
    """``authorizations_total``'s labels, each from its closed set ("other" outside it)."""
    return (
        status if status in AUTHORIZATION_STATUSES else OTHER,
        message if message in AUTHORIZATION_MESSAGES else OTHER,
    )


def connect_outcome_label(outcome: str) -> str:
    if outcome in CONNECT_OUTCOMES:
        return outcome
    if outcome.startswith("http_"):
        return "http_other"
    return "other"


def disconnect_reason_label(reason: str) -> str:
    return reason if reason in DISCONNECT_REASONS else "other"


def reconnect_reason(text: str) -> str:
    """Why a connection ended, from the reason text a runner's "disconnected" event carries
    (the link's own wording, see ``Link._down``)."""
    if text.startswith("closed by the station"):
        # the runner closes with "reconnecting" only to reboot after a Reset
        return "reset" if text.endswith("reconnecting") else links.CLOSED_LOCALLY
    if text.startswith("closed by the CSMS"):
        return links.CLOSED_BY_SERVER
    if text.startswith(("connection lost", "a write was interrupted")):
        return links.CONNECTION_LOST
    if text.startswith("internal error"):
        return links.INTERNAL_ERROR
    for reason in (links.MESSAGE_TOO_BIG, links.WEBSOCKET_ERROR):
        if text.startswith(reason):
            return reason
    return "other"
