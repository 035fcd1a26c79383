"""Handlers for what chargers send, one module per OCPP version.

A handler takes the service, the charger id and a payload that has already passed schema
validation, and returns the CALLRESULT payload. Handlers are plain functions: everything
they need is in memory, so a message is answered without waiting for I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from csms_stub.handlers import v16, v21, v201
from csms_stub.service import Service
from loadgen.protocols import OCPP16, OCPP21, OCPP201, Version

Handler = Callable[[Service, str, dict[str, Any]], dict[str, Any]]

HANDLERS: dict[str, dict[str, Handler]] = {
    OCPP16.name: v16.HANDLERS,
    OCPP201.name: v201.HANDLERS,
    OCPP21.name: v21.HANDLERS,
}

#: the versions the stub speaks; of those a charger offers, the stub takes the charger's first
SUPPORTED_VERSIONS: tuple[Version, ...] = (OCPP21, OCPP201, OCPP16)
