"""The OCPP-J WebSocket server: handshake, framing, dispatch and CSMS-initiated CALLs.

``ws://host:9000/<charger id>`` (any prefix before the last path segment is ignored).
Every frame is answered the way OCPP-J prescribes and nothing a charger sends can raise out
of here: broken frames get CALLERRORs, payloads are validated against the version's schemas,
handler failures become InternalError (as does a share of CALLs with ``--error-ratio``),
and each case is counted in the stub's metrics. Values the schemas allow but the database
cannot hold are refused before anything changes (PropertyConstraintViolation), and so is a
charger id it cannot hold, at the handshake (HTTP 400).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import random
import time
from collections import deque
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from csms_stub.config import StubConfig
from csms_stub.handlers import HANDLERS, SUPPORTED_VERSIONS
from csms_stub.metrics import StubMetrics
from csms_stub.service import RemoteCallFailed, Service
from csms_stub.store import (
    Store,
    StoreUnavailable,
    Unstorable,
    charger_id_problem,
    check_payload,
)
from loadgen import ocppj
from loadgen.protocols import BY_SUBPROTOCOL, Version, parse_timestamp, schemas

log = logging.getLogger(__name__)

#: close code for "a newer connection for this charger took over"
CLOSE_REPLACED = 4000
#: the csms_stub_messages_total outcome of a CALL that --error-ratio answered with an error
INJECTED_ERROR = "injected_error"
#: what --durable acknowledges only once its rows are committed: the transaction messages
#: --durable: how long a commit waits for other connections' messages to share it
DURABLE_GATHER_S = 0.005
DURABLE_ACTIONS = frozenset(
    {"TransactionEvent", "StartTransaction", "StopTransaction", "MeterValues"}
)


class _RedactingLogger(logging.LoggerAdapter):
    """websockets' server logger minus credentials: at DEBUG it echoes every request header."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if len(args) == 2 and str(args[0]).lower() in ("authorization", "proxy-authorization"):
            args = (args[0], "[redacted]")
        super().log(level, msg, *args, **kwargs)


#: the payload fields that hold a time the charger claims (OCPP dateTime)
_TIME_FIELDS = frozenset({"timestamp", "generatedAt"})


def seconds_ahead(payload: Any, now: float) -> float:
    """How far the latest time in ``payload`` (any ``timestamp`` / ``generatedAt``, at any
    depth) lies ahead of ``now``, in seconds; 0 or less when none does. Text that is no
    dateTime is skipped: the schema check owns formats."""
    ahead = 0.0
    stack = [payload]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in _TIME_FIELDS and isinstance(value, str):
                    with contextlib.suppress(ValueError, OverflowError):
                        ahead = max(ahead, parse_timestamp(value).timestamp() - now)
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(value for value in item if isinstance(value, dict | list))
    return ahead


#: what ends a CSMS CALL: the charger's reply, or (2.1) a CALLRESULT too broken to read
_Reply = ocppj.Message | ocppj.FrameError


def charger_id_from_path(path: str) -> str:
    """The charger id: the last non-empty segment of the request path, URL-decoded."""
    path = path.split("?", 1)[0]
    segments = [segment for segment in path.split("/") if segment]
    return unquote(segments[-1]) if segments else ""


class ChargerConnection:
    """One charger's OCPP-J connection, as the service sees it.

    It belongs to one :class:`OcppServer`, whose settings, service, store and metrics it
    uses, and which decides the load-dependent parts of each answer (reply delay, injected
    errors, the BootNotification's turn).
    """

    def __init__(
        self, server: OcppServer, ws: ServerConnection, charger_id: str, version: Version
    ) -> None:
        self.server = server
        self.config = server.config
        self.service = server.service
        self.metrics = server.metrics
        self.ws = ws
        self.charger_id = charger_id
        self.version = version
        self.version_name = version.name
        self.handlers = HANDLERS[version.name]
        self._ids = ocppj.MessageIds()
        self._call_lock = asyncio.Lock()  # one outstanding CSMS CALL at a time
        self._pending: tuple[str, str, asyncio.Future[_Reply]] | None = None
        # --slow-above: replies waiting for their time, in order, and the task sending them
        self._delayed: deque[tuple[float, str]] = deque()
        self._sender: asyncio.Task[None] | None = None
        # --durable: the reply receive() just returned waits for the next commit
        self._commit_first = False
        # --max-boot-rate: seconds the reply receive() just returned waits for its turn
        self._boot_wait = 0.0
        #: handling a SEND (2.1): whatever the handling says, nothing is sent back
        self._in_send = False
        #: ids (and actions) of the last CALLRESULTs sent, to name what a CALLRESULTERROR is about
        self._answered: deque[tuple[str, str]] = deque(maxlen=16)

    # -- CSMS -> charger ---------------------------------------------------------------

    async def call(self, action: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        metrics = self.metrics
        async with self._call_lock:
            message_id = self._ids()
            future: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
            self._pending = (message_id, action, future)
            try:
                await self.ws.send(ocppj.Call(message_id, action, payload).encode())
                reply = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                metrics.csms_calls.labels(action, "timeout").inc()
                raise RemoteCallFailed("timeout", f"{action}: no reply in {timeout:g} s") from None
            except ConnectionClosed:
                metrics.csms_calls.labels(action, "disconnected").inc()
                raise RemoteCallFailed(
                    "charger_offline", f"{action}: charger disconnected"
                ) from None
            finally:
                self._pending = None
        if isinstance(reply, ocppj.CallError):
            metrics.csms_calls.labels(action, "error").inc()
            raise RemoteCallFailed(
                "call_error",
                f"{action}: charger answered CALLERROR {reply.error_code} "
                f"{reply.error_description!r}",
            )
        if isinstance(reply, ocppj.FrameError):
            # 2.1: a CALLRESULT too broken to read (its id could be)
            metrics.csms_calls.labels(action, "invalid").inc()
            await self._reject_result(reply.message_id, reply.error_code, reply.description)
            raise RemoteCallFailed("invalid_response", reply.description)
        assert isinstance(reply, ocppj.CallResult)
        try:
            schemas.validate(self.version, action, reply.payload, response=True)
        except schemas.PayloadError as exc:
            metrics.csms_calls.labels(action, "invalid").inc()
            await self._reject_result(reply.message_id, exc.error_code, exc.description)
            raise RemoteCallFailed("invalid_response", str(exc)) from None
        metrics.csms_calls.labels(action, "result").inc()
        return reply.payload

    async def _reject_result(self, message_id: str, error_code: str, description: str) -> None:
        """OCPP 2.1: tell the charger its CALLRESULT could not be accepted (CALLRESULTERROR)."""
        if not self.version.extended_rpc:
            return  # counted as csms_calls_total{outcome="invalid"} either way
        error = ocppj.CallResultError(message_id, error_code, description[:255])
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(error.encode())

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)

    # -- charger -> CSMS ---------------------------------------------------------------

    async def run(self) -> None:
        try:
            async for frame in self.ws:
                reply = self.receive(frame)
                if reply is None:
                    continue
                if self._commit_first:
                    # --durable: acknowledge only what is committed. Waiting here keeps the
                    # replies in order; OCPP-J allows a charger one CALL at a time anyway.
                    self._commit_first = False
                    try:
                        await self.server.store.flush(
                            self.config.store_timeout, within=DURABLE_GATHER_S
                        )
                    except StoreUnavailable as exc:
                        # No acknowledgement: the charger retries on its next connection.
                        self.metrics.protocol_errors.labels("not_committed").inc()
                        await self.ws.close(1011, f"not committed: {exc}"[:120])
                        return
                delay = max(self.server.reply_delay, self._boot_wait)
                self._boot_wait = 0.0
                if delay > 0 or self._delayed:
                    self._send_later(reply, delay)
                else:
                    await self.ws.send(reply)
        finally:
            if self._sender is not None:
                self._sender.cancel()

    def _send_later(self, reply: str, delay: float) -> None:
        """Queue a reply for ``delay`` s from now without holding up this connection's reader
        (a charger's answers to CSMS CALLs still arrive on time) or anyone else."""
        self._delayed.append((asyncio.get_running_loop().time() + delay, reply))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_delayed())

    async def _send_delayed(self) -> None:
        """Send queued replies in arrival order, each no earlier than it is due."""
        loop = asyncio.get_running_loop()
        try:
            while self._delayed:
                due, reply = self._delayed[0]
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                await self.ws.send(reply)
                # Dequeue only once sent, so a reply that is not delayed cannot overtake it.
                self._delayed.popleft()
        except ConnectionClosed:
            self._delayed.clear()  # the reader sees the close and ends the connection
        finally:
            self._sender = None

    def receive(self, frame: str | bytes) -> str | None:
        """Handle one frame; return the text to send back, if any."""
        metrics = self.metrics
        if isinstance(frame, bytes):
            metrics.protocol_errors.labels("binary_frame").inc()
            return self._error(
                ocppj.CallError(
                    ocppj.UNKNOWN_MESSAGE_ID,
                    ocppj.ErrorCode.RPC_FRAMEWORK_ERROR,
                    "OCPP-J messages are text frames",
                )
            )
        try:
            message = ocppj.parse(frame, extended=self.version.extended_rpc)
        except ocppj.FrameError as exc:
            metrics.protocol_errors.labels("malformed_frame").inc()
            self.service.log_event(
                self.charger_id,
                "error",
                None,
                {"error": exc.error_code, "detail": exc.description, "frame": frame[:200]},
            )
            if not exc.answerable:
                # never answer a reply (that could loop forever), nor a SEND
                if exc.message_type == ocppj.CALLRESULT and self.version.extended_rpc:
                    self._complete_pending(exc.message_id, exc)  # call() says why
                return None
            return self._error(exc.to_call_error())
        if isinstance(message, ocppj.Call):
            reply = self._handle_call(message)
            self._answered.append((message.message_id, message.action))
            return reply
        if isinstance(message, ocppj.Send):
            self._handle_send(message)
            return None
        if isinstance(message, ocppj.CallResultError):
            self._handle_result_error(message)
            return None
        self._handle_reply(message)
        return None

    def _handle_send(self, send: ocppj.Send) -> None:
        """A SEND (2.1) goes through a CALL's checks and handler; nothing is sent back."""
        self._in_send = True
        try:
            self._handle_call(ocppj.Call(send.message_id, send.action, send.payload))
        finally:
            self._in_send = False
            self._commit_first = False  # no reply waits for a commit
            self._boot_wait = 0.0

    def _handle_result_error(self, message: ocppj.CallResultError) -> None:
        """The charger could not accept one of the stub's CALLRESULTs: count and log it."""
        self.metrics.protocol_errors.labels("callresulterror").inc()
        action = next((a for i, a in self._answered if i == message.message_id), None)
        self.service.log_event(
            self.charger_id,
            "error",
            action,
            {
                "error": "CALLRESULTERROR",
                "code": message.error_code[:64],
                "detail": message.error_description[:500],
                "message_id": message.message_id,
            },
        )

    def _handle_call(self, call: ocppj.Call) -> str:
        started = time.perf_counter()
        action = call.action
        service = self.service
        metrics = self.metrics
        try:
            schemas.validate(self.version, action, call.payload)
        except schemas.UnknownAction:
            return self._reject(
                call, "unknown", ocppj.ErrorCode.NOT_IMPLEMENTED, f"unknown action {action!r}"
            )
        except schemas.PayloadError as exc:
            return self._reject(call, action, exc.error_code, exc.description)
        try:
            check_payload(call.payload)
        except Unstorable as exc:
            return self._reject(call, action, exc.error_code, exc.description)
        tolerance = self.config.reject_future_timestamps
        if tolerance is not None:
            ahead = seconds_ahead(call.payload, time.time())
            if ahead > tolerance:
                metrics.future_timestamps.labels(action).inc()
                return self._reject(
                    call,
                    action,
                    ocppj.ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
                    f"a timestamp {ahead:.0f} s in the future (more than {tolerance:g} s)",
                )
        handler = self.handlers.get(action)
        if handler is None:
            return self._reject(
                call,
                action,
                ocppj.ErrorCode.NOT_SUPPORTED,
                f"{action} is not something a CSMS accepts",
            )
        charger = service.chargers.get(self.charger_id)
        if action != "BootNotification" and (
            (charger is not None and charger.boot_status == "Rejected")
            or not service.is_allowed(self.charger_id)
        ):
            # A rejected boot, or --strict and a charger the CSMS does not know.
            return self._reject(
                call,
                action,
                ocppj.ErrorCode.SECURITY_ERROR,
                "not accepted by this CSMS: only a BootNotification is answered",
            )
        error_ratio = self.server.error_ratio
        if error_ratio > 0 and self.server.random.random() < error_ratio:
            # --error-ratio: a CALL the stub would handle is refused instead, so nothing is
            # stored (not even an event_log row: under load, a write per refusal).
            metrics.messages.labels(self.version_name, action, INJECTED_ERROR).inc()
            return self._error(
                ocppj.CallError(
                    call.message_id, ocppj.ErrorCode.INTERNAL_ERROR, "csms_stub --error-ratio"
                )
            )
        try:
            result = handler(service, self.charger_id, call.payload)
        except Unstorable as exc:
            return self._reject(call, action, exc.error_code, exc.description)
        except Exception:
            log.exception("handler %s failed for %s", action, self.charger_id)
            return self._reject(
                call,
                action,
                ocppj.ErrorCode.INTERNAL_ERROR,
                "the CSMS failed to process this message",
            )
        metrics.messages.labels(self.version_name, action, "result").inc()
        metrics.handler_seconds.labels(action).observe(time.perf_counter() - started)
        self._commit_first = self.config.durable and action in DURABLE_ACTIONS
        if action == "BootNotification":
            self._boot_wait = self.server.boot_turn()
        return ocppj.CallResult(call.message_id, result).encode()

    def _reject(self, call: ocppj.Call, action: str, code: str, description: str) -> str:
        self.metrics.messages.labels(self.version_name, action, code).inc()
        self.service.log_event(
            self.charger_id, "error", call.action[:48], {"error": code, "detail": description[:500]}
        )
        return self._error(ocppj.CallError(call.message_id, code, description[:255]))

    def _error(self, error: ocppj.CallError) -> str:
        code = self.version.error_code(error.error_code)
        if not self._in_send:  # a refused SEND is counted by its outcome, never answered
            self.metrics.call_errors.labels(code).inc()
        return ocppj.CallError(
            error.message_id, code, error.error_description, error.error_details
        ).encode()

    def _complete_pending(self, message_id: str, value: Any) -> bool:
        pending = self._pending
        if pending is None or pending[0] != message_id:
            return False
        if not pending[2].done():
            pending[2].set_result(value)
        return True

    def _handle_reply(self, message: ocppj.CallResult | ocppj.CallError) -> None:
        pending = self._pending
        if pending is None or pending[0] != message.message_id:
            self.metrics.protocol_errors.labels("unexpected_reply").inc()
            self.service.log_event(
                self.charger_id,
                "error",
                None,
                {"error": "unexpected reply", "message_id": message.message_id},
            )
            return
        future = pending[2]
        if not future.done():
            future.set_result(message)


class OcppServer:
    """The WebSocket listener; one :class:`ChargerConnection` per charger.

    It answers with ``service``, acknowledges --durable messages once ``store`` committed
    them, and counts in ``metrics``; ``config`` holds the listener's and the limits' options.
    """

    def __init__(
        self, config: StubConfig, service: Service, store: Store, metrics: StubMetrics
    ) -> None:
        self.config = config
        self.service = service
        self.store = store
        self.metrics = metrics
        #: draws the CALLs that --error-ratio answers with a CALLERROR
        self.random = random.Random(config.error_seed)
        self.server: Server | None = None
        self._subprotocols = [version.subprotocol for version in SUPPORTED_VERSIONS]
        self._closing: set[asyncio.Task[None]] = set()
        # --max-connections: handshakes let through but not yet handed to _handle, so that
        # concurrent handshakes cannot all squeeze past the cap.
        self._opening: dict[ServerConnection, str] = {}
        #: seconds added to every reply, from --slow-above / --slow-ms-per-charger
        self.reply_delay = 0.0
        #: share of CALLs answered with a CALLERROR now, from --error-ratio / --errors-above
        self.error_ratio = 0.0
        #: --max-boot-rate: loop time at which the next BootNotification may be answered
        self._next_boot = 0.0

    def boot_turn(self) -> float:
        """Seconds a BootNotification arriving now waits for its turn (--max-boot-rate).

        Turns are 1/R apart and handed out in arrival order, so a burst of boots is
        answered at R per second overall, as by a CSMS that registers stations one by one;
        a charger that leaves while waiting still used its turn (the CSMS did the work).
        """
        rate = self.config.max_boot_rate
        if rate <= 0:
            return 0.0
        now = asyncio.get_running_loop().time()
        turn = max(now, self._next_boot)
        self._next_boot = turn + 1 / rate
        wait = turn - now
        metrics = self.metrics
        metrics.boot_queue_seconds.set(wait)
        if wait > 0:
            metrics.boots_queued.inc()
        return wait

    async def start(self, host: str, port: int, **kwargs: Any) -> None:
        config = self.config
        self.server = await serve(
            self._handle,
            host,
            port,
            subprotocols=self._subprotocols,
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            compression=None,  # OCPP messages are small; deflate costs ~40 KB/connection
            ping_interval=config.ping_interval or None,
            max_size=config.max_message_size,
            max_queue=4,
            server_header="csms_stub",
            logger=_RedactingLogger(logging.getLogger("websockets.server")),
            **kwargs,
        )

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close(close_connections=True)
        await self.server.wait_closed()

    def _select_subprotocol(self, connection: ServerConnection, offered: Any) -> str | None:
        # The charger lists its subprotocols in its order of preference: take its first
        # that the stub speaks (predictable: the charger decides, as OCPP-J asks).
        for subprotocol in offered:
            if subprotocol in self._subprotocols:
                return subprotocol
        # OCPP-J: finish the handshake without a subprotocol, then close at once (_handle).
        return None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        charger_id = charger_id_from_path(request.path)
        if not charger_id:
            self.metrics.connections.labels("no_charger_id").inc()
            return connection.respond(
                HTTPStatus.NOT_FOUND, "the URL must end with the charger id\n"
            )
        problem = charger_id_problem(charger_id)
        if problem:
            self.metrics.connections.labels("bad_charger_id").inc()
            return connection.respond(HTTPStatus.BAD_REQUEST, f"csms_stub: {problem}\n")
        if self.config.require_auth:
            failure = self._check_basic_auth(charger_id, request.headers)
            if failure:
                self.metrics.connections.labels("unauthorized").inc()
                log.info("refused %s: %s", charger_id, failure)
                response = connection.respond(HTTPStatus.UNAUTHORIZED, failure + "\n")
                response.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
                return response
        if self.config.on_duplicate == "reject" and charger_id in self.service.connections:
            self.metrics.connections.labels("duplicate_rejected").inc()
            return connection.respond(
                HTTPStatus.CONFLICT, f"charger {charger_id} is already connected\n"
            )
        limit = self.config.max_connections
        if limit > 0:
            if self._is_new(charger_id) and self._occupied() >= limit:
                self.metrics.connections.labels("max_connections").inc()
                log.debug("refused %s: --max-connections %d reached", charger_id, limit)
                return connection.respond(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"csms_stub: --max-connections {limit} reached\n",
                )
            self._opening[connection] = charger_id
            # A handshake that fails after this point never reaches _handle: free its slot.
            connection.connection_lost_waiter.add_done_callback(
                lambda _: self._opening.pop(connection, None)
            )
        return None

    def _is_new(self, charger_id: str) -> bool:
        """False for a charger replacing its own connection: that takes no extra slot."""
        return charger_id not in self.service.connections and (
            charger_id not in self._opening.values()
        )

    def _occupied(self) -> int:
        """Chargers connected, counting those whose handshake is still under way."""
        connections = self.service.connections
        opening = {cid for cid in self._opening.values() if cid not in connections}
        return len(connections) + len(opening)

    def _connections_changed(self) -> None:
        """Refresh the connected gauge and the reply delay and error share that depend on it."""
        config = self.config
        connected = len(self.service.connections)
        self.metrics.chargers_connected.set(connected)
        delay = 0.0
        if config.slow_ms_per_charger > 0 and connected > config.slow_above:
            excess_ms = (connected - config.slow_above) * config.slow_ms_per_charger
            delay = min(excess_ms, config.slow_max_ms) / 1000
        self.reply_delay = delay
        self.metrics.reply_delay_seconds.set(delay)
        self.error_ratio = config.error_ratio if connected > config.errors_above else 0.0

    def _check_basic_auth(self, charger_id: str, headers: Headers) -> str | None:
        """None when the request carries this charger's credentials, else why not."""
        expected = self.service.password_of(charger_id) or self.config.auth_password
        if not expected:
            return f"no password is configured for {charger_id}"
        header = headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return "Basic authentication required"
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "malformed Authorization header"
        # OCPP security profile 1: the username is the charging station's identity.
        if username != charger_id or not hmac.compare_digest(password.encode(), expected.encode()):
            return "wrong credentials"
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        # From here the charger counts in service.connections (registered below, with no
        # await in between) or has gone: either way its handshake slot is done.
        self._opening.pop(ws, None)
        charger_id = charger_id_from_path(ws.request.path if ws.request else "")
        if ws.subprotocol is None:
            self.metrics.connections.labels("no_subprotocol").inc()
            offered = ws.request.headers.get("Sec-WebSocket-Protocol", "") if ws.request else ""
            await ws.close(
                1002,
                f"unsupported subprotocol {offered!r}; use one of {', '.join(self._subprotocols)}"[
                    :120
                ],
            )
            return
        version = BY_SUBPROTOCOL[ws.subprotocol]
        connection = ChargerConnection(self, ws, charger_id, version)
        previous = self.service.connections.get(charger_id)
        if previous is not None:
            if self.config.on_duplicate == "reject":
                self.metrics.connections.labels("duplicate_rejected").inc()
                await ws.close(1008, "charger is already connected")
                return
            self.metrics.connections.labels("replaced").inc()
            # Close the old one in the background; its handler unregisters only itself.
            task = asyncio.create_task(
                previous.close(CLOSE_REPLACED, "replaced by a new connection")
            )
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self.metrics.connections.labels("accepted").inc()
        self.service.connected(connection)
        self._connections_changed()
        code: int | None = None
        reason = ""
        try:
            await connection.run()
            code, reason = ws.close_code, ws.close_reason or ""
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            reason = exc.rcvd.reason if exc.rcvd else "no close frame"
            if exc.sent is not None and exc.sent.code == 1009:
                self.metrics.protocol_errors.labels("message_too_big").inc()
                code, reason = 1009, "message too big"
        except Exception:  # a bug of ours must not take the server down
            log.exception("connection of %s failed", charger_id)
            code, reason = 1011, "internal error"
        finally:
            self.service.disconnected(connection, code, reason)
            self._connections_changed()
