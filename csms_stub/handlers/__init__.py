"""Handlers for what chargers send, one module per OCPP version.

A handler takes the service, the charger id and a payload that has already passed schema
validation, and returns the CALLRESULT payload. Handlers are plain functions: everything
they need is in memory, so a message is answered without waiting for I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from csms_stub.handlers import v16, v201
from csms_stub.service import Service
from loadgen.protocols import OCPP16, OCPP201, Version

Handler = Callable[[Service, str, dict[str, Any]], dict[str, Any]]

HANDLERS: dict[str, dict[str, Handler]] = {
    OCPP16.name: v16.HANDLERS,
    OCPP201.name: v201.HANDLERS,
}

#: the versions the stub speaks, in its order of preference
SUPPORTED_VERSIONS: tuple[Version, ...] = (OCPP201, OCPP16)
