"""Payload validation against the JSON schemas the ``ocpp`` package ships.

The schemas are compiled with ``fastjsonschema`` on first use (about 20 µs per
TransactionEvent instead of about 500 µs with ``jsonschema``) and cached per process.
A violation is raised as :class:`PayloadError` carrying the RPC error code the OCPP-J
specification assigns to that kind of violation.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import ocpp

from loadgen.ocppj import ErrorCode
from loadgen.protocols import Version

_SCHEMA_ROOT = Path(ocpp.__file__).parent

# fastjsonschema's failing rule -> OCPP-J error code. A missing or repeated field breaks an
# occurrence constraint; a value of the wrong JSON type, length or format breaks its data type
# (string[36], dateTime, ...); a well-typed value that is not allowed breaks a property
# constraint; anything that does not fit the PDU's structure is a format violation.
_RULE_TO_ERROR_CODE = {
    "required": ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION,
    "minItems": ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION,
    "maxItems": ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION,
    "minProperties": ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION,
    "type": ErrorCode.TYPE_CONSTRAINT_VIOLATION,
    "maxLength": ErrorCode.TYPE_CONSTRAINT_VIOLATION,
    "minLength": ErrorCode.TYPE_CONSTRAINT_VIOLATION,
    "format": ErrorCode.TYPE_CONSTRAINT_VIOLATION,
    "pattern": ErrorCode.TYPE_CONSTRAINT_VIOLATION,
    "enum": ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
    "const": ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
    "minimum": ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
    "maximum": ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
    "exclusiveMinimum": ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
    "exclusiveMaximum": ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
    "multipleOf": ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
}


class UnknownAction(LookupError):
    """No schema exists for this action in this OCPP version."""


class PayloadError(ValueError):
    """A payload that violates its schema; ``error_code`` is the OCPP-J code to answer."""

    def __init__(self, error_code: str, description: str, path: str = "") -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.path = path


def schema_path(version: Version, action: str, response: bool = False) -> Path:
    suffix = "Response" if response else version.request_schema_suffix
    folder = _SCHEMA_ROOT / version.schema_package / "schemas"
    path = folder / f"{action}{suffix}.json"
    if not response and suffix and not path.exists():
        # A message that is only ever a SEND (2.1 NotifyPeriodicEventStream) has one schema,
        # named after the action alone.
        return folder / f"{action}.json"
    return path


def actions(version: Version) -> list[str]:
    """Every action this version defines, from its request schemas."""
    folder = _SCHEMA_ROOT / version.schema_package / "schemas"
    names = []
    for path in folder.glob("*.json"):
        stem = path.stem
        if stem.endswith("Response"):
            continue
        if version.request_schema_suffix:
            # a stem without the suffix is a SEND-only message (2.1 NotifyPeriodicEventStream)
            stem = stem.removesuffix(version.request_schema_suffix)
        names.append(stem)
    return sorted(names)


@functools.cache
def _compiled(path: Path) -> Callable[[Any], Any]:
    schema = json.loads(path.read_text(encoding="utf-8"))
    # The schemas carry a draft $schema URI; fastjsonschema needs no network for them.
    return fastjsonschema.compile(schema, use_formats=True)


@functools.cache
def _known_actions(version: Version) -> frozenset[str]:
    return frozenset(actions(version))


def validator(version: Version, action: str, response: bool = False) -> Callable[[Any], Any]:
    """The compiled validator for one action's request (or response) payload.

    The action is looked up among the version's schema names before any path is built: a
    peer's action name must never reach the file system (a 1,000-character name raised
    "File name too long" and dropped the connection; ``./X`` variants would each have
    compiled and cached a schema)."""
    if action not in _known_actions(version):
        raise UnknownAction(f"OCPP {version.name} has no action {action[:64]!r}")
    return _validator(version, action, response)


@functools.cache
def _validator(version: Version, action: str, response: bool) -> Callable[[Any], Any]:
    # Cached by name: finding the file costs a stat() per call, a third of a validation.
    return _compiled(schema_path(version, action, response))


def validate(version: Version, action: str, payload: Any, response: bool = False) -> None:
    """Raise :class:`PayloadError` (or :class:`UnknownAction`) unless ``payload`` is valid."""
    check = validator(version, action, response)
    try:
        check(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        code = _RULE_TO_ERROR_CODE.get(exc.rule or "", ErrorCode.FORMAT_VIOLATION)
        path = (exc.name or "data").removeprefix("data").lstrip(".")
        kind = "response" if response else "request"
        message = "payload" + exc.message.removeprefix("data")
        raise PayloadError(version.error_code(code), f"{action} {kind}: {message}", path) from None
