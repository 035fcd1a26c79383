"""OCPP-J framing (pure): encode / parse round trips, malformed frames, message ids."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen import ocppj
from loadgen.ocppj import (
    CALL,
    CALLERROR,
    CALLRESULT,
    Call,
    CallError,
    CallResult,
    ErrorCode,
    FrameError,
    MessageIds,
)

# -- strategies --------------------------------------------------------------------------

# Property tests run without hypothesis' deadline: a busy CI machine must not make them flaky.

#: JSON values orjson can write and read back unchanged (64-bit integers, finite floats)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
message_ids = st.text(min_size=1, max_size=ocppj.MAX_MESSAGE_ID_LENGTH)
actions = st.text(min_size=1, max_size=40)


# -- round trips -------------------------------------------------------------------------


@settings(deadline=None)
@given(message_id=message_ids, action=actions, payload=json_objects)
def test_call_round_trip(message_id: str, action: str, payload: dict[str, Any]) -> None:
    call = Call(message_id, action, payload)
    text = call.encode()
    assert json.loads(text) == [CALL, message_id, action, payload]
    assert ocppj.parse(text) == call
    assert ocppj.parse(text.encode()) == call


@settings(deadline=None)
@given(message_id=message_ids, payload=json_objects)
def test_call_result_round_trip(message_id: str, payload: dict[str, Any]) -> None:
    result = CallResult(message_id, payload)
    text = result.encode()
    assert json.loads(text) == [CALLRESULT, message_id, payload]
    assert ocppj.parse(text) == result


@settings(deadline=None)
@given(
    message_id=message_ids,
    code=st.sampled_from(
        [value for name, value in vars(ErrorCode).items() if not name.startswith("_")]
    ),
    description=st.text(max_size=255),
    details=json_objects,
)
def test_call_error_round_trip(
    message_id: str, code: str, description: str, details: dict[str, Any]
) -> None:
    error = CallError(message_id, code, description, details)
    text = error.encode()
    assert json.loads(text) == [CALLERROR, message_id, code, description, details]
    assert ocppj.parse(text) == error


def test_call_error_defaults_to_empty_description_and_details() -> None:
    text = CallError("42", ErrorCode.GENERIC_ERROR).encode()
    assert json.loads(text) == [4, "42", "GenericError", "", {}]


def test_encoding_is_compact_json() -> None:
    assert Call("1", "Heartbeat", {}).encode() == '[2,"1","Heartbeat",{}]'
    assert CallResult("1", {"a": 1}).encode() == '[3,"1",{"a":1}]'


def test_message_id_of_36_characters_is_accepted() -> None:
    message_id = "x" * ocppj.MAX_MESSAGE_ID_LENGTH
    assert ocppj.parse(Call(message_id, "Heartbeat", {}).encode()).message_id == message_id


# -- malformed frames --------------------------------------------------------------------

RPC = ErrorCode.RPC_FRAMEWORK_ERROR
FORMAT = ErrorCode.FORMAT_VIOLATION
UNSUPPORTED = ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED
UNKNOWN = ocppj.UNKNOWN_MESSAGE_ID

MALFORMED = [
    # (frame, error code, message id, message type)
    pytest.param("not json", RPC, UNKNOWN, None, id="not-json"),
    pytest.param("", RPC, UNKNOWN, None, id="empty-text"),
    pytest.param(b"\xff\xfe", RPC, UNKNOWN, None, id="invalid-utf8"),
    pytest.param('[2, "1", "Heartbeat", {}', RPC, UNKNOWN, None, id="truncated"),
    pytest.param("[" * 2000 + "]" * 2000, RPC, UNKNOWN, None, id="too-deep"),
    pytest.param('{"a": 1}', RPC, UNKNOWN, None, id="object"),
    pytest.param('"text"', RPC, UNKNOWN, None, id="string"),
    pytest.param("2", RPC, UNKNOWN, None, id="number"),
    pytest.param("null", RPC, UNKNOWN, None, id="null"),
    pytest.param("[]", RPC, UNKNOWN, None, id="empty-array"),
    pytest.param("[2]", RPC, UNKNOWN, CALL, id="call-without-id"),
    pytest.param('[2, 17, "Heartbeat", {}]', RPC, UNKNOWN, CALL, id="integer-id"),
    pytest.param('[2, null, "Heartbeat", {}]', RPC, UNKNOWN, CALL, id="null-id"),
    pytest.param('[2, "", "Heartbeat", {}]', RPC, UNKNOWN, CALL, id="empty-id"),
    pytest.param(f'[2, "{"x" * 37}", "Heartbeat", {{}}]', RPC, UNKNOWN, CALL, id="37-char-id"),
    pytest.param("[3, 5, {}]", RPC, UNKNOWN, CALLRESULT, id="result-integer-id"),
    pytest.param('[4, ["a"], "X", "", {}]', RPC, UNKNOWN, CALLERROR, id="error-list-id"),
    pytest.param('["2", 5]', RPC, UNKNOWN, None, id="string-type-bad-id"),
    pytest.param('[2, "m1", "Heartbeat"]', RPC, "m1", CALL, id="call-without-payload"),
    pytest.param('[2, "m1"]', RPC, "m1", CALL, id="call-without-action"),
    pytest.param('[2, "m1", 7, {}]', RPC, "m1", CALL, id="call-integer-action"),
    pytest.param('[2, "m1", "", {}]', RPC, "m1", CALL, id="call-empty-action"),
    pytest.param('[2, "m1", "Heartbeat", {}, {}]', RPC, "m1", CALL, id="call-extra-element"),
    pytest.param('[2, "m1", "Heartbeat", []]', FORMAT, "m1", CALL, id="call-list-payload"),
    pytest.param('[2, "m1", "Heartbeat", null]', FORMAT, "m1", CALL, id="call-null-payload"),
    pytest.param('[2, "m1", "Heartbeat", "{}"]', FORMAT, "m1", CALL, id="call-string-payload"),
    pytest.param('[3, "m1"]', FORMAT, "m1", CALLRESULT, id="result-without-payload"),
    pytest.param('[3, "m1", []]', FORMAT, "m1", CALLRESULT, id="result-list-payload"),
    pytest.param('[3, "m1", {}, {}]', FORMAT, "m1", CALLRESULT, id="result-extra-element"),
    pytest.param('[4, "m1", "GenericError", ""]', FORMAT, "m1", CALLERROR, id="error-short"),
    pytest.param('[4, "m1", 1, "", {}]', FORMAT, "m1", CALLERROR, id="error-integer-code"),
    pytest.param('[4, "m1", "X", null, {}]', FORMAT, "m1", CALLERROR, id="error-null-desc"),
    pytest.param('[4, "m1", "X", "", []]', FORMAT, "m1", CALLERROR, id="error-list-details"),
    pytest.param('[4, "m1", "X", "", {}, 1]', FORMAT, "m1", CALLERROR, id="error-extra-element"),
    pytest.param('[5, "m1", {}]', UNSUPPORTED, "m1", 5, id="type-5"),
    pytest.param('[0, "m1"]', UNSUPPORTED, "m1", 0, id="type-0"),
    pytest.param('[-2, "m1", "Heartbeat", {}]', UNSUPPORTED, "m1", -2, id="type-negative"),
    pytest.param('["2", "m1", "Heartbeat", {}]', UNSUPPORTED, "m1", None, id="type-string"),
    pytest.param('[null, "m1", "Heartbeat", {}]', UNSUPPORTED, "m1", None, id="type-null"),
    pytest.param('[{}, "m1", "Heartbeat", {}]', UNSUPPORTED, "m1", None, id="type-object"),
]


@pytest.mark.parametrize(("frame", "code", "message_id", "message_type"), MALFORMED)
def test_malformed_frames_raise_frame_error(
    frame: str | bytes, code: str, message_id: str, message_type: int | None
) -> None:
    with pytest.raises(FrameError) as caught:
        ocppj.parse(frame)
    error = caught.value
    assert error.error_code == code
    assert error.message_id == message_id
    assert error.message_type == message_type
    assert error.description
    assert str(error) == error.description


def test_frame_error_becomes_a_call_error_with_its_id_and_code() -> None:
    with pytest.raises(FrameError) as caught:
        ocppj.parse('[2, "abc", "Heartbeat", []]')
    reply = caught.value.to_call_error()
    assert reply == CallError("abc", FORMAT, caught.value.description)
    assert ocppj.parse(reply.encode()) == reply


def test_frame_error_description_is_cut_to_255_characters() -> None:
    error = FrameError(RPC, "x" * 1000)
    assert error.message_id == UNKNOWN
    assert error.message_type is None
    reply = error.to_call_error()
    assert reply.message_id == "-1"
    assert len(reply.error_description) == 255


def test_unreadable_frame_reply_uses_message_id_minus_one() -> None:
    with pytest.raises(FrameError) as caught:
        ocppj.parse("}{")
    assert caught.value.to_call_error().encode().startswith('[4,"-1","RpcFrameworkError",')


# -- parse never raises anything but FrameError ------------------------------------------


def _parse_or_frame_error(frame: str | bytes) -> None:
    try:
        message = ocppj.parse(frame)
    except FrameError as error:
        assert isinstance(error.error_code, str) and error.error_code
        assert isinstance(error.message_id, str)
        assert 1 <= len(error.message_id) <= ocppj.MAX_MESSAGE_ID_LENGTH
        assert error.message_type is None or isinstance(error.message_type, int)
        return
    # What parses is a well-formed message that encodes back to the same message.
    assert isinstance(message, Call | CallResult | CallError)
    assert 1 <= len(message.message_id) <= ocppj.MAX_MESSAGE_ID_LENGTH
    assert ocppj.parse(message.encode()) == message


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_arbitrary_text(text: str) -> None:
    _parse_or_frame_error(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, min_codepoint=0xD7F0, max_codepoint=0xE010)))
def test_parse_text_with_lone_surrogates(text: str) -> None:
    _parse_or_frame_error(text)


@settings(max_examples=300, deadline=None)
@given(st.binary())
def test_parse_arbitrary_bytes(data: bytes) -> None:
    _parse_or_frame_error(data)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_parse_arbitrary_json(value: Any) -> None:
    _parse_or_frame_error(orjson.dumps(value))


#: arrays that look like frames: a plausible type first, then anything
frame_like = st.tuples(
    st.sampled_from([2, 3, 4, 5, 6, 2.0, True, "2", None]) | json_scalars,
    st.lists(json_values | message_ids | st.just("x" * 37), max_size=5),
).map(lambda parts: [parts[0], *parts[1]])


@settings(max_examples=500, deadline=None)
@given(frame_like)
def test_parse_frame_like_arrays(frame: list[Any]) -> None:
    _parse_or_frame_error(orjson.dumps(frame))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["[2,", '[3,"a",', "[4", "1e999", "[1e400]", '"\\ud800"', "[", "{"]))
def test_parse_edge_texts(text: str) -> None:
    _parse_or_frame_error(text)


# -- message ids -------------------------------------------------------------------------


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=2000))
def test_message_ids_are_unique_and_short(count: int) -> None:
    ids = MessageIds()
    seen = [ids() for _ in range(count)]
    assert len(set(seen)) == count
    assert all(0 < len(message_id) <= ocppj.MAX_MESSAGE_ID_LENGTH for message_id in seen)


@settings(deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=50), min_size=2, max_size=8))
def test_message_ids_are_unique_across_instances(counts: list[int]) -> None:
    """Random prefixes keep ids apart across processes, connections and reconnects."""
    seen = [MessageIds() for _ in counts]
    produced = [ids() for ids, count in zip(seen, counts, strict=True) for _ in range(count)]
    assert len(set(produced)) == len(produced) == sum(counts)


def test_message_ids_with_a_prefix_count_up() -> None:
    ids = MessageIds("cp7")
    assert [ids(), ids(), ids()] == ["cp7-1", "cp7-2", "cp7-3"]


def test_message_ids_stay_within_36_characters_for_a_long_run() -> None:
    ids = MessageIds()
    last = ""
    for _ in range(100_000):
        last = ids()
    assert last.endswith("-100000")
    assert len(last) <= ocppj.MAX_MESSAGE_ID_LENGTH
    # A generated id is a valid messageId for parse.
    assert ocppj.parse(Call(last, "Heartbeat", {}).encode()).message_id == last


@pytest.mark.parametrize("message_type", ["2.0", "true", "3.0", '"2"'])
def test_only_json_integers_are_message_types(message_type: str) -> None:
    with pytest.raises(ocppj.FrameError) as caught:
        ocppj.parse(f'[{message_type}, "id-1", "Heartbeat", {{}}]')
    assert caught.value.error_code == ocppj.ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED
    assert caught.value.message_type is None


# -- OCPP-J 2.1: SEND and CALLRESULTERROR --------------------------------------------------


@settings(deadline=None)
@given(message_id=message_ids, action=actions, payload=json_objects)
def test_send_round_trip_in_2_1(message_id: str, action: str, payload: dict[str, Any]) -> None:
    send = ocppj.Send(message_id, action, payload)
    text = send.encode()
    assert json.loads(text) == [ocppj.SEND, message_id, action, payload]
    assert ocppj.parse(text, extended=True) == send


@settings(deadline=None)
@given(message_id=message_ids, description=st.text(max_size=255), details=json_objects)
def test_call_result_error_round_trip_in_2_1(
    message_id: str, description: str, details: dict[str, Any]
) -> None:
    error = ocppj.CallResultError(message_id, ErrorCode.FORMAT_VIOLATION, description, details)
    text = error.encode()
    assert json.loads(text) == [5, message_id, "FormatViolation", description, details]
    assert ocppj.parse(text, extended=True) == error


def test_call_result_error_defaults_to_empty_description_and_details() -> None:
    text = ocppj.CallResultError("7", ErrorCode.GENERIC_ERROR).encode()
    assert json.loads(text) == [5, "7", "GenericError", "", {}]


@pytest.mark.parametrize(
    "frame", ['[6,"s1","NotifyPeriodicEventStream",{}]', '[5,"r1","FormatViolation","",{}]']
)
def test_send_and_call_result_error_are_unknown_types_before_2_1(frame: str) -> None:
    # 1.6 and 2.0.1 know types 2-4 only: the answer is a CALLERROR, as for any unknown type.
    with pytest.raises(FrameError) as caught:
        ocppj.parse(frame)
    assert caught.value.error_code == ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED
    assert caught.value.message_id == frame.split('"')[1]
    assert caught.value.answerable


@pytest.mark.parametrize(
    ("frame", "code", "message_type"),
    [
        ('[6,"s1","Heartbeat"]', ErrorCode.RPC_FRAMEWORK_ERROR, 6),
        ('[6,"s1","",{}]', ErrorCode.RPC_FRAMEWORK_ERROR, 6),
        ('[6,"s1","Heartbeat",[]]', ErrorCode.FORMAT_VIOLATION, 6),
        ('[5,"r1","FormatViolation",""]', ErrorCode.FORMAT_VIOLATION, 5),
        ('[5,"r1",7,"",{}]', ErrorCode.FORMAT_VIOLATION, 5),
        ('[5,"r1","FormatViolation","",null]', ErrorCode.FORMAT_VIOLATION, 5),
        ('[6,"x",{}]', ErrorCode.RPC_FRAMEWORK_ERROR, 6),
        ("[6,17]", ErrorCode.RPC_FRAMEWORK_ERROR, 6),
        ("[5]", ErrorCode.RPC_FRAMEWORK_ERROR, 5),
    ],
)
def test_malformed_send_and_call_result_error_are_never_answered(
    frame: str, code: str, message_type: int
) -> None:
    # Neither a SEND nor a CALLRESULTERROR ever gets a reply, not even a CALLERROR.
    with pytest.raises(FrameError) as caught:
        ocppj.parse(frame, extended=True)
    assert caught.value.error_code == code
    assert caught.value.message_type == message_type
    assert not caught.value.answerable


def test_calls_and_unknown_types_stay_answerable_in_2_1() -> None:
    with pytest.raises(FrameError) as caught:
        ocppj.parse('[7,"u1","Heartbeat",{}]', extended=True)
    assert caught.value.error_code == ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED
    assert caught.value.answerable
    with pytest.raises(FrameError) as caught:
        ocppj.parse('[2,"c1","Heartbeat",[]]', extended=True)
    assert caught.value.answerable
    for reply in ('[3,"r1",[]]', '[4,"e1","GenericError"]'):
        with pytest.raises(FrameError) as caught:
            ocppj.parse(reply, extended=True)
        assert not caught.value.answerable


@settings(max_examples=300, deadline=None)
@given(frame_like)
def test_parse_frame_like_arrays_in_2_1(frame: list[Any]) -> None:
    try:
        message = ocppj.parse(orjson.dumps(frame), extended=True)
    except FrameError as exc:
        assert exc.error_code in vars(ErrorCode).values()
    else:
        assert message.message_id == frame[1]
        assert ocppj.parse(message.encode(), extended=True) == message
