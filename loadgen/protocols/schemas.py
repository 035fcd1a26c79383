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
    return _SCHEMA_ROOT / version.schema_package / "schemas" / f"{action}{suffix}.json"


def actions(version: Version) -> list[str]:
    """Every action this version defines, from its request schemas."""
    folder = _SCHEMA_ROOT / version.schema_package / "schemas"
    names = []
    for path in folder.glob("*.json"):
        stem = path.stem
        if stem.endswith("Response"):
            continue
        if version.request_schema_suffix:
            if not stem.endswith(version.request_schema_suffix):
                continue
            stem = stem[: -len(version.request_schema_suffix)]
        names.append(stem)
    return sorted(names)


@functools.cache
def _compiled(path: Path) -> Callable[[Any], Any]:
    schema = json.loads(path.read_text(encoding="utf-8"))
    # The schemas carry a draft $schema URI; fastjsonschema needs no network for them.
    return fastjsonschema.compile(schema, use_formats=True)


@functools.cache
def validator(version: Version, action: str, response: bool = False) -> Callable[[Any], Any]:
    """The compiled validator for one action's request (or response) payload.

    Cached by name: finding the file costs a stat() per call, a third of a validation.
    The name comes off the wire, so it is looked up among the version's actions before it
    goes near a path: "x" * 1000, a NUL or "../v16/..." is an unknown action, not an
    OSError or another version's schema."""
    if action not in _action_set(version):
        raise UnknownAction(f"OCPP {version.name} has no action {action[:64]!r}")
    return _compiled(schema_path(version, action, response))


@functools.cache
def _action_set(version: Version) -> frozenset[str]:
    return frozenset(actions(version))


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
