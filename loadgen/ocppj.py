"""OCPP-J framing: CALL, CALLRESULT, CALLERROR (and in 2.1 SEND, CALLRESULTERROR) on a
WebSocket text frame.

Pure code: no sockets, no clocks. Both the load generator and ``csms_stub`` frame and
parse messages here, so the two sides cannot drift apart.

A frame is a JSON array whose first element is the message type:

- ``[2, messageId, action, payload]``: CALL
- ``[3, messageId, payload]``: CALLRESULT
- ``[4, messageId, errorCode, errorDescription, errorDetails]``: CALLERROR
- ``[5, messageId, errorCode, errorDescription, errorDetails]``: CALLRESULTERROR (OCPP-J 2.1:
  the receiver of a CALLRESULT could not accept it)
- ``[6, messageId, action, payload]``: SEND (OCPP-J 2.1: a request that gets no reply)

Types 5 and 6 exist only in OCPP-J 2.1: :func:`parse` returns them only with
``extended=True``; otherwise they are unknown message types, as 1.6 and 2.0.1 say.

:func:`parse` turns text into one of the three message classes or raises
:class:`FrameError`, which carries the error code the receiver should answer with and the
message id when it could be read (OCPP 2.0.1 part 4, 4.2.3: ``"-1"`` when it could not).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

import orjson

CALL = 2
CALLRESULT = 3
CALLERROR = 4
#: OCPP-J 2.1 only
CALLRESULTERROR = 5
SEND = 6

#: messageId is a string of at most 36 characters (OCPP-J 1.6 and 2.0.1).
MAX_MESSAGE_ID_LENGTH = 36

#: The message id a CALLERROR uses when the id of the offending message could not be read.
UNKNOWN_MESSAGE_ID = "-1"


class ErrorCode:
    """RPC framework error codes (OCPP-J 2.0.1 part 4, 4.3). 1.6 uses a subset of them."""

    FORMAT_VIOLATION = "FormatViolation"
    GENERIC_ERROR = "GenericError"
    INTERNAL_ERROR = "InternalError"
    MESSAGE_TYPE_NOT_SUPPORTED = "MessageTypeNotSupported"
    NOT_IMPLEMENTED = "NotImplemented"
    NOT_SUPPORTED = "NotSupported"
    OCCURRENCE_CONSTRAINT_VIOLATION = "OccurrenceConstraintViolation"
    #: OCPP-J 1.6 spells it with one "r"; its receivers expect that spelling.
    OCCURENCE_CONSTRAINT_VIOLATION_16 = "OccurenceConstraintViolation"
    PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
    PROTOCOL_ERROR = "ProtocolError"
    RPC_FRAMEWORK_ERROR = "RpcFrameworkError"
    SECURITY_ERROR = "SecurityError"
    TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"


@dataclass(frozen=True, slots=True)
class Call:
    message_id: str
    action: str
    payload: dict[str, Any]

    def encode(self) -> str:
        return _dumps([CALL, self.message_id, self.action, self.payload])


@dataclass(frozen=True, slots=True)
class CallResult:
    message_id: str
    payload: dict[str, Any]

    def encode(self) -> str:
        return _dumps([CALLRESULT, self.message_id, self.payload])


@dataclass(frozen=True, slots=True)
class CallError:
    message_id: str
    error_code: str
    error_description: str = ""
    error_details: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        return _dumps(
            [
                CALLERROR,
                self.message_id,
                self.error_code,
                self.error_description,
                self.error_details,
            ]
        )


@dataclass(frozen=True, slots=True)
class Send:
    """OCPP-J 2.1 SEND: like a CALL, but the receiver never answers it."""

    message_id: str
    action: str
    payload: dict[str, Any]

    def encode(self) -> str:
        return _dumps([SEND, self.message_id, self.action, self.payload])


@dataclass(frozen=True, slots=True)
class CallResultError:
    """OCPP-J 2.1 CALLRESULTERROR: the CALLRESULT with this id could not be accepted."""

    message_id: str
    error_code: str
    error_description: str = ""
    error_details: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        return _dumps(
            [
                CALLRESULTERROR,
                self.message_id,
                self.error_code,
                self.error_description,
                self.error_details,
            ]
        )


Message = Call | CallResult | CallError | Send | CallResultError


class CallErrorReply(Exception):
    """Raised by whoever answers a CALL to make the answer a CALLERROR.

    Used on both sides: a station refusing a CSMS request, a test script playing a charger,
    and the tests' asyncio client (``tests/aio_client.py``) when the peer answered with a
    CALLERROR.
    """

    def __init__(
        self, error_code: str, description: str = "", details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{error_code}: {description}" if description else error_code)
        self.error_code = error_code
        self.description = description
        self.details = details or {}


class FrameError(Exception):
    """A frame that is not a valid OCPP-J message.

    ``error_code`` is what to answer in a CALLERROR; ``message_id`` is the offending
    message's id, or :data:`UNKNOWN_MESSAGE_ID` when it could not be read. ``message_type``
    says what the frame looked like; ``answerable`` whether it may get a CALLERROR: a broken
    reply may not (that would start a ping-pong of errors), nor a broken SEND or
    CALLRESULTERROR in 2.1 (neither ever gets an answer).
    """

    def __init__(
        self,
        error_code: str,
        description: str,
        message_id: str = UNKNOWN_MESSAGE_ID,
        message_type: int | None = None,
        answerable: bool | None = None,
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.message_id = message_id
        self.message_type = message_type
        if answerable is None:
            answerable = message_type not in (CALLRESULT, CALLERROR)
        self.answerable = answerable

    def to_call_error(self) -> CallError:
        return CallError(self.message_id, self.error_code, self.description[:255])


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def parse(text: str | bytes, *, extended: bool = False) -> Message:
    """Parse one frame. Raises :class:`FrameError`, never anything else.

    ``extended`` (OCPP-J 2.1) accepts SEND and CALLRESULTERROR frames.
    """
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FrameError(ErrorCode.RPC_FRAMEWORK_ERROR, f"frame is not JSON: {exc}") from None
    if not isinstance(frame, list) or not frame:
        raise FrameError(ErrorCode.RPC_FRAMEWORK_ERROR, "frame is not a non-empty JSON array")
    raw_type = frame[0]
    # Only a JSON integer is a message type: 2.0 and true compare equal to 2 and 1.
    message_type = raw_type if type(raw_type) is int else None
    message_id = frame[1] if len(frame) > 1 else None
    if not isinstance(message_id, str) or not message_id or len(message_id) > 36:
        raise FrameError(
            ErrorCode.RPC_FRAMEWORK_ERROR,
            "messageId must be a string of 1 to 36 characters",
            message_type=message_type,
            answerable=_answerable(message_type, extended),
        )
    if message_type == CALL:
        if len(frame) != 4 or not isinstance(frame[2], str) or not frame[2]:
            raise FrameError(
                ErrorCode.RPC_FRAMEWORK_ERROR,
                "CALL must be [2, messageId, action, payload]",
                message_id,
                CALL,
            )
        if not isinstance(frame[3], dict):
            raise FrameError(
                ErrorCode.FORMAT_VIOLATION, "CALL payload must be a JSON object", message_id, CALL
            )
        return Call(message_id, frame[2], frame[3])
    if message_type == CALLRESULT:
        if len(frame) != 3 or not isinstance(frame[2], dict):
            raise FrameError(
                ErrorCode.FORMAT_VIOLATION,
                "CALLRESULT must be [3, messageId, payload object]",
                message_id,
                CALLRESULT,
            )
        return CallResult(message_id, frame[2])
    if message_type == CALLERROR:
        if (
            len(frame) != 5
            or not isinstance(frame[2], str)
            or not isinstance(frame[3], str)
            or not isinstance(frame[4], dict)
        ):
            raise FrameError(
                ErrorCode.FORMAT_VIOLATION,
                "CALLERROR must be [4, messageId, errorCode, errorDescription, errorDetails]",
                message_id,
                CALLERROR,
            )
        return CallError(message_id, frame[2], frame[3], frame[4])
    if extended and message_type == SEND:
        if len(frame) != 4 or not isinstance(frame[2], str) or not frame[2]:
            raise FrameError(
                ErrorCode.RPC_FRAMEWORK_ERROR,
                "SEND must be [6, messageId, action, payload]",
                message_id,
                SEND,
                answerable=False,
            )
        if not isinstance(frame[3], dict):
            raise FrameError(
                ErrorCode.FORMAT_VIOLATION,
                "SEND payload must be a JSON object",
                message_id,
                SEND,
                answerable=False,
            )
        return Send(message_id, frame[2], frame[3])
    if extended and message_type == CALLRESULTERROR:
        if (
            len(frame) != 5
            or not isinstance(frame[2], str)
            or not isinstance(frame[3], str)
            or not isinstance(frame[4], dict)
        ):
            raise FrameError(
                ErrorCode.FORMAT_VIOLATION,
                "CALLRESULTERROR must be [5, messageId, errorCode, errorDescription, errorDetails]",
                message_id,
                CALLRESULTERROR,
                answerable=False,
            )
        return CallResultError(message_id, frame[2], frame[3], frame[4])
    raise FrameError(
        ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED,
        f"message type {raw_type!r} is not supported",
        message_id,
        message_type,
    )


def _answerable(message_type: int | None, extended: bool) -> bool:
    if message_type in (CALLRESULT, CALLERROR):
        return False
    return not (extended and message_type in (SEND, CALLRESULTERROR))


class MessageIds:
    """Unique message ids: a random per-instance prefix and a counter.

    Cheaper than ``uuid4()`` per message and unique across processes and reconnects, which is
    all OCPP-J asks (ids need only be unique per sender and connection).
    """

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix if prefix is not None else os.urandom(6).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"
