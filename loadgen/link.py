"""The WebSocket RPC endpoint a charging station speaks OCPP-J through, on gevent.

Locust runs on gevent, so this is synchronous code for greenlets: :meth:`Link.call` blocks
the calling greenlet until the CSMS answers. Everything the CSMS sends is read by a libev I/O
watcher callback on the socket, in the hub, not by a reader greenlet: a parked greenlet costs
~8.5 KB, the watcher almost nothing (docs/design.md, "Concurrency model": ~7 instead of
~15 KB per idle connection, and a few µs less per round trip). The WebSocket is
``websockets``' sans-I/O :class:`~websockets.client.ClientProtocol` over a gevent socket
(same section: ``websockets``' handshake, framing, close codes and size limits at the
asyncio floor's cost). No monkey patching is needed. Compression and WebSocket pings are off: OCPP
messages are small and OCPP has Heartbeat.

What the link guarantees, whatever the CSMS does:

- at most one outstanding CALL per connection; further callers queue FIFO behind it, and a
  timed-out CALL frees the slot for the next one;
- every CALL put on the wire is timed from send to reply / CALLERROR / timeout / disconnect
  and reported to :meth:`CallObserver.call_done`;
- CSMS-initiated CALLs reach :meth:`CallHandler.on_call` in arrival order, in a greenlet
  that lives only while there are some (a watcher callback must not block), and are always
  answered (CALLRESULT, or CALLERROR);
- garbage from the CSMS is counted with :meth:`CallObserver.protocol_error` and never
  answered when it looks like a reply (that could ping-pong forever);
- OCPP 2.1 (OCPP-J's SEND and CALLRESULTERROR): a SEND from the CSMS reaches
  :meth:`CallHandler.on_call` like a CALL but is never answered (a failure is logged and
  counted); a CALLRESULTERROR (the CSMS could not accept one of our CALLRESULTs) is counted
  and logged; a CALLRESULT of the CSMS's we cannot accept gets a CALLRESULTERROR;
  :meth:`Link.send` sends a SEND;
- a lost connection fails the waiting caller with :class:`Disconnected` and calls
  :meth:`CallHandler.on_disconnect` exactly once per connection;
- the Basic auth password appears in no log line, exception or repr.

Reconnecting (and its back-off) is the station runner's job; :meth:`Link.connect` works again
on a link that was closed or lost its connection.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import errno
import functools
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import gevent
import gevent.event
import gevent.socket
import gevent.ssl
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, InvalidURI, PayloadTooBig, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import WebSocketURI, parse_uri

from loadgen import ocppj
from loadgen.logutil import RateLimitedLog
from loadgen.ocppj import CallErrorReply
from loadgen.protocols import Version, schemas

log = logging.getLogger(__name__)
#: a process out of file descriptors fails every connect at once: one line per interval
quiet = RateLimitedLog(log)

__all__ = [
    "AddressCache",
    "CallErrorReply",
    "CallErrorResponse",
    "CallFailed",
    "CallHandler",
    "CallObserver",
    "CallTimeout",
    "ConnectFailed",
    "Disconnected",
    "InvalidResponse",
    "Link",
    "LinkError",
    "tls_context",
]

_perf_counter = time.perf_counter
_WEBSOCKETS_LOG = logging.getLogger("websockets.client")

#: bytes asked of the socket per read; OCPP frames are far smaller, big ones take a few reads
RECV_SIZE = 65536
#: reply ids of timed-out CALLs remembered, to tell a late reply from an unknown one
LATE_REPLY_MEMORY = 16
#: ids (and actions) of our last CALLRESULTs, to name the action a CALLRESULTERROR is about
ANSWERED_MEMORY = 16

# observer.call_done outcomes
RESULT = "result"
ERROR = "error"
TIMEOUT = "timeout"
DISCONNECTED = "disconnected"

# observer.disconnected reasons (a closed set: they become metric labels)
CLOSED_LOCALLY = "closed"
CLOSED_BY_SERVER = "closed_by_server"
CONNECTION_LOST = "connection_lost"
MESSAGE_TOO_BIG = "message_too_big"
WEBSOCKET_ERROR = "websocket_protocol_error"
INTERNAL_ERROR = "internal_error"

#: error codes a CALLERROR may carry that are passed to the observer as they are; anything
#: else a CSMS invents is reported as "Other" so a metric label cannot explode
KNOWN_ERROR_CODES = frozenset(
    value for name, value in vars(ocppj.ErrorCode).items() if not name.startswith("_")
)
OTHER_ERROR_CODE = "Other"


class CallObserver(Protocol):
    """Where the link reports what happened; the metrics layer implements it."""

    def call_done(self, action: str, outcome: str, seconds: float, error_code: str | None) -> None:
        """A CALL of ours ended: outcome is result, error, timeout or disconnected."""

    def message(self, direction: str, kind: str) -> None:
        """A frame went out or came in: ("sent" | "received", "call" | "result" | "error"
        | "send" | "callresulterror")."""

    def connect_done(self, outcome: str, seconds: float) -> None:
        """A connect() ended: "ok" or the :attr:`ConnectFailed.kind` of the failure."""

    def disconnected(self, reason: str) -> None:
        """A connection ended; reason is one of this module's disconnect reasons."""

    def protocol_error(self, kind: str) -> None:
        """The CSMS sent something broken: malformed_frame, binary_frame, late_reply, ..."""


class CallHandler(Protocol):
    """The station: answers CSMS-initiated CALLs and hears about disconnects.

    Both run, in arrival order, in a greenlet the link spawns while there are CSMS CALLs or a
    disconnect to hand over (``on_disconnect`` after a local :meth:`Link.close` runs in the
    greenlet that closed, unless CSMS CALLs are still queued before it). ``on_call`` must not
    call :meth:`Link.call` (the CSMS may not answer ours before it has its answer) and
    neither should block for long (later CSMS CALLs wait meanwhile; replies to our own CALLs
    are read regardless). Spawn a greenlet for follow-ups and reconnects.
    """

    def on_call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Return the CALLRESULT payload, or raise :class:`CallErrorReply`.

        A SEND (OCPP 2.1) comes here too; what it returns or raises is not sent.
        """
        ...

    def on_disconnect(self, code: int | None, reason: str) -> None:
        """The connection ended; ``code`` is the close code, None when TCP just dropped."""


class NullObserver:
    """Observes nothing, so the link never has to ask whether there is an observer (and a
    base for observers that watch one thing)."""

    def call_done(self, action: str, outcome: str, seconds: float, error_code: str | None) -> None:
        pass

    def message(self, direction: str, kind: str) -> None:
        pass

    def connect_done(self, outcome: str, seconds: float) -> None:
        pass

    def disconnected(self, reason: str) -> None:
        pass

    def protocol_error(self, kind: str) -> None:
        pass


NULL_OBSERVER = NullObserver()


class LinkError(Exception):
    """Base of the errors the link raises on purpose."""


class ConnectFailed(LinkError):
    """The connection could not be opened.

    ``str(exc)`` is a one-line reason for people; ``kind`` a short label for metrics
    (refused, timeout, dns, network, tls, http_401, handshake, subprotocol).
    """

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class CallFailed(LinkError):
    """A CALL of ours got no CALLRESULT; ``action`` says which."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(message)
        self.action = action


class CallErrorResponse(CallFailed):
    """The CSMS answered with a CALLERROR."""

    def __init__(
        self,
        action: str,
        error_code: str,
        description: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(action, f"{action}: CALLERROR {error_code} {description!r}")
        self.error_code = error_code
        self.description = description
        self.details = details or {}


class InvalidResponse(CallFailed):
    """The CSMS answered with a broken CALLRESULT / CALLERROR, or (``validate=True``) a
    CALLRESULT that violates its schema; ``error_code`` names the violation."""

    def __init__(self, action: str, error_code: str, description: str) -> None:
        super().__init__(action, f"{action}: invalid reply ({error_code}): {description}")
        self.error_code = error_code
        self.description = description


class CallTimeout(CallFailed):
    """No reply within the timeout. The slot is free again; a late reply is dropped."""


class Disconnected(CallFailed):
    """The link was not connected, or the connection ended before the reply."""


class _Secret:
    """Holds the Authorization header value; shows up as <redacted> anywhere it is printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


class _Lost:
    """What a waiting CALL receives when its connection ends."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Connection:
    """One WebSocket connection; a Link has a new one per connect()."""

    __slots__ = (
        "closer",
        "closing_timer",
        "dispatcher",
        "down",
        "early_events",
        "failure",
        "finished",
        "fragment_opcode",
        "fragments",
        "inbox",
        "sock",
        "tls",
        "watcher",
        "writing",
        "ws",
    )

    def __init__(self, sock: Any, ws: ClientProtocol, early_events: list[Any]) -> None:
        self.sock = sock
        self.ws = ws
        self.early_events = early_events
        self.tls = isinstance(sock, ssl.SSLSocket)
        #: the libev read watcher feeding ``ws``; None before connect() ends and once finished
        self.watcher: Any = None
        #: ends a closing handshake the CSMS does not finish (a libev timer), once started
        self.closing_timer: Any = None
        self.down = False
        #: the socket is closed and the watcher gone
        self.finished = False
        #: set when finished, for a close() waiting for the closing handshake
        self.closer: gevent.event.Event | None = None
        #: why a write failed, reported when the connection ends
        self.failure: str | None = None
        self.writing = False
        self.fragments: list[bytes] | None = None
        self.fragment_opcode: Opcode | None = None
        #: CSMS CALLs and the disconnect notice for the handler, in order, and the short-lived
        #: greenlet that works through them (both None while there is nothing to do)
        self.inbox: list[Any] | None = None
        self.dispatcher: gevent.Greenlet | None = None


class _Pending:
    """The one outstanding CALL of ours."""

    __slots__ = ("action", "conn", "message_id", "received_at", "result")

    def __init__(self, message_id: str, action: str, conn: _Connection) -> None:
        self.message_id = message_id
        self.action = action
        self.conn = conn
        self.result = gevent.event.AsyncResult()
        self.received_at = 0.0


def redact_url(url: str) -> str:
    """The URL without the password it may carry (``ws://id:secret@host`` -> ``ws://***@host``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def basic_authorization(username: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic auth (OCPP security profile 1)."""
    if ":" in username:
        raise ValueError("a Basic auth user id cannot contain ':'")
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


class AddressCache:
    """``getaddrinfo`` results reused for ``ttl`` seconds, one lookup at a time per address.

    Every charger of a run connects to the same CSMS: gevent's default resolver hands each
    lookup to a thread (~10 % of a connect's CPU, measured spawning 1,000 chargers/s), even
    for an IP address. Failures are not remembered: each connect tries again. Chargers that
    find a lookup of the same address under way wait for it instead of starting their own.
    """

    def __init__(
        self,
        ttl: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        resolve: Callable[..., Any] = gevent.socket.getaddrinfo,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._resolve = resolve
        self._entries: dict[tuple[str, int], tuple[float, list[Any]]] = {}
        self._pending: dict[tuple[str, int], gevent.event.Event] = {}

    def lookup(self, host: str, port: int) -> list[Any]:
        """``getaddrinfo(host, port, 0, SOCK_STREAM)``'s list; raises ``socket.gaierror``."""
        key = (host, port)
        waited = False
        while True:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > self._clock():
                return entry[1]
            pending = self._pending.get(key)
            if pending is None or waited:
                break
            pending.wait()  # then the cache has it, or the lookup failed: try ourselves
            waited = True
        done = None
        if key not in self._pending:
            done = self._pending[key] = gevent.event.Event()
        try:
            addresses = list(self._resolve(host, port, 0, socket.SOCK_STREAM))
            if not addresses:
                raise socket.gaierror(socket.EAI_NONAME, "no address")
            self._entries[key] = (self._clock() + self.ttl, addresses)
            return addresses
        finally:
            if done is not None:
                del self._pending[key]
                done.set()

    def clear(self) -> None:
        self._entries.clear()


#: the process's resolved CSMS addresses (every Link's)
ADDRESSES = AddressCache()


def _connect_tcp(addresses: list[Any]) -> Any:
    """A gevent socket connected to the first of ``addresses`` that answers (as
    ``socket.create_connection`` does); the last address's error if none does."""
    for index, (family, kind, proto, _, address) in enumerate(addresses):
        sock = gevent.socket.socket(family, kind, proto)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            if index == len(addresses) - 1:
                raise
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise OSError("no address to connect to")


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # One per process: loading the system CA store costs milliseconds and memory.
    return gevent.ssl.create_default_context()


def tls_context(
    ca_bundle: str | None = None, client_cert: str | None = None, client_key: str | None = None
) -> ssl.SSLContext:
    """The client TLS context for OCPP security profiles 2 and 3.

    Profile 2: the CSMS's certificate is checked against ``ca_bundle`` (the system's CAs
    when None). Profile 3 adds the station's own certificate (``client_cert``, with the key
    in ``client_key`` or in the same PEM file).
    """
    context = gevent.ssl.create_default_context(cafile=ca_bundle)
    if client_cert:
        context.load_cert_chain(client_cert, client_key)
    return context


class Link:
    """One charging station's OCPP-J connection to a CSMS, for greenlets.

    ``connect()`` then ``call()`` from any greenlet of the station; CSMS-initiated CALLs go to
    ``handler.on_call``. The call timeout covers sending and waiting for the reply, not the
    time spent queued behind another CALL of this link.

    ``offer`` lists the versions to offer in the handshake, in order of preference (default:
    ``version`` alone); after ``connect()``, :attr:`version` is the one the CSMS chose.
    """

    def __init__(
        self,
        url: str,
        version: Version,
        handler: CallHandler,
        *,
        observer: CallObserver | None = None,
        connect_timeout: float = 10.0,
        call_timeout: float = 30.0,
        basic_auth: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_size: int = 1 << 20,
        validate: bool = False,
        close_timeout: float = 2.0,
        offer: tuple[Version, ...] = (),
    ) -> None:
        safe_url = redact_url(url)
        try:
            uri = parse_uri(url)
        except InvalidURI as exc:
            raise ValueError(f"not a WebSocket URL: {safe_url} ({exc.msg})") from None
        if uri.user_info is not None:
            # websockets would send credentials in the URL as Basic auth: do the same, but
            # keep them only in the redacted header.
            if basic_auth is None:
                basic_auth = uri.user_info
            uri = dataclasses.replace(uri, username=None, password=None)
        self.url = safe_url
        #: the version spoken: ``version``, or after connect() the one the CSMS chose of ``offer``
        self.version = version
        #: the subprotocols offered in the handshake, in order of preference
        self.offer: tuple[Version, ...] = offer or (version,)
        self.handler = handler
        self.observer: CallObserver = observer if observer is not None else NULL_OBSERVER
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.close_timeout = close_timeout
        self.max_size = max_size
        self.validate = validate
        self.ssl_context = ssl_context
        self._uri: WebSocketURI = uri
        self._authorization = _Secret(basic_authorization(*basic_auth)) if basic_auth else None
        self._ids = ocppj.MessageIds()
        self._conn: _Connection | None = None
        self._connecting = False
        self._pending: _Pending | None = None
        self._timed_out: collections.deque[str] = collections.deque(maxlen=LATE_REPLY_MEMORY)
        self._answered: collections.deque[tuple[str, str]] = collections.deque(
            maxlen=ANSWERED_MEMORY
        )
        # FIFO hand-off lock for the one-outstanding-CALL rule. gevent's Semaphore does not
        # promise FIFO order and lets a newcomer barge in ahead of woken waiters.
        self._busy = False
        self._waiters: collections.deque[gevent.event.Event] = collections.deque()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<Link {self.url} {self.version.subprotocol} {state}>"

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.down

    @property
    def subprotocol(self) -> str:
        return self.version.subprotocol

    # -- connecting ----------------------------------------------------------------------

    def connect(self) -> None:
        """Open TCP (+TLS) and the WebSocket; raise :class:`ConnectFailed` if it fails.

        Blocks the calling greenlet at most ``connect_timeout`` seconds in all. Works again
        after a disconnect or close(): each connect() is a new connection.
        """
        if self.connected:
            raise RuntimeError(f"{self!r} is already connected")
        if self._connecting:
            raise RuntimeError(f"{self!r}: connect() is already in progress")
        self._connecting = True
        started = _perf_counter()
        try:
            conn = self._open()
        except ConnectFailed as exc:
            self.observer.connect_done(exc.kind, _perf_counter() - started)
            log.debug("%s: connect failed: %s", self.url, exc)
            raise
        finally:
            self._connecting = False
        self._conn = conn
        hub = gevent.get_hub()
        conn.watcher = hub.loop.io(conn.sock.fileno(), 1)
        conn.watcher.start(self._on_readable, conn)
        if conn.early_events or conn.tls:
            # Frames that came with the handshake, or TLS records the handshake's read left
            # decrypted inside OpenSSL (the socket would not say they are there).
            hub.loop.run_callback(self._on_readable, conn)
        self.observer.connect_done("ok", _perf_counter() - started)

    def _open(self) -> _Connection:
        uri = self._uri
        timer = gevent.Timeout(self.connect_timeout)
        timer.start()
        sock: Any = None
        try:
            sock = self._open_tcp(uri)
            if uri.secure:
                sock = self._start_tls(sock, uri.host)
            ws = ClientProtocol(
                uri,
                subprotocols=[v.subprotocol for v in self.offer],
                max_size=self.max_size,
                logger=_WEBSOCKETS_LOG,  # else a getLogger() per connect
            )
            request = ws.connect()
            if self._authorization is not None:
                request.headers["Authorization"] = self._authorization.reveal()
            # websockets logs request headers at DEBUG: never log the credentials.
            debug, ws.debug = ws.debug, False
            ws.send_request(request)
            ws.debug = debug
            try:
                for chunk in ws.data_to_send():
                    sock.sendall(chunk)
            except OSError as exc:
                raise ConnectFailed(
                    f"connection lost during the handshake: {exc}", "handshake"
                ) from None
            early_events = self._read_handshake(sock, ws)
            chosen = next((v for v in self.offer if v.subprotocol == ws.subprotocol), None)
            if chosen is None:
                offered = ", ".join(v.subprotocol for v in self.offer)
                raise ConnectFailed(
                    f"the CSMS accepted none of the subprotocols {offered}", "subprotocol"
                )
            self.version = chosen
            return _Connection(sock, ws, early_events)
        except gevent.Timeout as exc:
            if sock is not None:
                sock.close()
            if exc is not timer:
                raise
            raise ConnectFailed(
                f"no connection within {self.connect_timeout:g} s", "timeout"
            ) from None
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        finally:
            timer.close()

    def _open_tcp(self, uri: WebSocketURI) -> Any:
        where = f"{uri.host}:{uri.port}"
        try:
            sock = _connect_tcp(ADDRESSES.lookup(uri.host, uri.port))
        except socket.gaierror as exc:
            raise ConnectFailed(f"cannot resolve {uri.host}: {exc.strerror}", "dns") from None
        except ConnectionRefusedError:
            raise ConnectFailed(f"connection refused by {where}", "refused") from None
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                # This process (or the machine) is out of files, not the CSMS: say so once.
                reason = "too many open files (raise ulimit -n, or run fewer chargers per process)"
                quiet.error("emfile", "connect failed", reason)
                raise ConnectFailed(reason, "too_many_open_files") from None
            raise ConnectFailed(
                f"cannot connect to {where}: {exc.strerror or exc}", "network"
            ) from None
        # Small frames, one at a time: Nagle + delayed ACK would add 40 ms per round trip.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _start_tls(self, sock: Any, host: str) -> Any:
        context = self.ssl_context or _default_ssl_context()
        try:
            # gevent's SSLContext.wrap_socket does exactly this; going through SSLSocket
            # directly also accepts a plain ssl.SSLContext without blocking the hub.
            # suppress_ragged_eofs=False: a TLS peer hanging up without close_notify (as
            # servers that reject a client certificate do) is a TLS error, not a clean EOF.
            tls = gevent.ssl.SSLSocket(
                sock=sock,
                server_hostname=host,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=False,
                _context=context,
            )
        except BaseException:
            sock.close()
            raise
        try:
            tls.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            tls.close()
            raise ConnectFailed(
                f"TLS: server certificate rejected: {exc.verify_message}", "tls"
            ) from None
        except ssl.SSLError as exc:
            tls.close()
            raise ConnectFailed(f"TLS handshake failed: {exc.reason or exc}", "tls") from None
        except OSError as exc:
            tls.close()
            raise ConnectFailed(f"TLS handshake failed: {exc.strerror or exc}", "tls") from None
        except BaseException:
            tls.close()
            raise
        return tls

    def _read_handshake(self, sock: Any, ws: ClientProtocol) -> list[Any]:
        """Read until the HTTP response; return the frames that came with it."""
        while True:
            try:
                data = sock.recv(RECV_SIZE)
            except ssl.SSLEOFError:
                # TLS 1.3 servers check the client certificate after the client's handshake
                raise ConnectFailed(
                    "TLS: the CSMS hung up after the TLS handshake "
                    "(client certificate missing or rejected?)",
                    "tls",
                ) from None
            except ssl.SSLError as exc:
                raise ConnectFailed(f"TLS: {exc.reason or exc}", "tls") from None
            except OSError as exc:
                raise ConnectFailed(
                    f"connection lost during the WebSocket handshake: {exc.strerror or exc}",
                    "handshake",
                ) from None
            if data:
                ws.receive_data(data)
            else:
                ws.receive_eof()
            events = ws.events_received()
            failure = ws.handshake_exc
            if isinstance(failure, InvalidStatus):
                response = failure.response
                raise ConnectFailed(
                    f"HTTP {response.status_code} {response.reason_phrase}".rstrip(),
                    f"http_{response.status_code}",
                )
            if failure is not None:
                cause = f": {failure.__cause__}" if failure.__cause__ else ""
                raise ConnectFailed(f"WebSocket handshake failed: {failure}{cause}", "handshake")
            if events:
                return events[1:]  # events[0] is the 101 response
            if not data:
                raise ConnectFailed("connection closed during the WebSocket handshake", "handshake")

    # -- calling -------------------------------------------------------------------------

    def call(
        self, action: str, payload: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """Send a CALL and return the CALLRESULT payload.

        Raises :class:`CallErrorResponse`, :class:`CallTimeout`, :class:`Disconnected` or
        :class:`InvalidResponse`; with ``validate=True`` an invalid payload raises
        :class:`~loadgen.protocols.schemas.PayloadError` before anything is sent.
        """
        if self.validate:
            schemas.validate(self.version, action, payload)
        conn = self._conn
        if conn is None or conn.down:
            raise Disconnected(action, f"{action}: not connected")
        if gevent.getcurrent() is conn.dispatcher:
            raise RuntimeError(
                "Link.call() from on_call/on_disconnect would hold up the CSMS's CALLs "
                "queued behind it (a CSMS may not answer ours until it has its answer): "
                "spawn a greenlet for it"
            )
        self._acquire()
        try:
            if self._conn is not conn or conn.down:
                raise Disconnected(action, f"{action}: disconnected while queued")
            return self._call(conn, action, payload, timeout)
        finally:
            self._release()

    def _call(
        self, conn: _Connection, action: str, payload: dict[str, Any], timeout: float | None
    ) -> dict[str, Any]:
        if conn.ws.state is not State.OPEN:
            # websockets is failing the connection; the watcher is about to report it.
            raise Disconnected(action, f"{action}: the connection is closing")
        if timeout is None:
            timeout = self.call_timeout
        message_id = self._ids()
        data = ocppj.Call(message_id, action, payload).encode().encode()
        pending = _Pending(message_id, action, conn)
        self._pending = pending
        observer = self.observer
        timer = gevent.Timeout(timeout)
        started = _perf_counter()
        timer.start()
        try:
            conn.ws.send_text(data)
            self._flush(conn)
            observer.message("sent", "call")
            reply = pending.result.get()
        except gevent.Timeout as exc:
            if exc is not timer:
                self._timed_out.append(message_id)  # cut short: its reply comes late
                raise
            # The reply and the deadline may have come in the same turn of the loop.
            reply = pending.result.get() if pending.result.ready() else None
        except BaseException:
            self._timed_out.append(message_id)  # killed (a stopping user): the same
            raise
        finally:
            timer.close()
            if self._pending is pending:
                self._pending = None
        if reply is None:
            self._timed_out.append(message_id)
            observer.call_done(action, TIMEOUT, _perf_counter() - started, None)
            raise CallTimeout(action, f"{action}: no reply within {timeout:g} s")
        seconds = pending.received_at - started
        kind = type(reply)
        if kind is ocppj.CallResult:
            if self.validate:
                try:
                    schemas.validate(self.version, action, reply.payload, response=True)
                except schemas.PayloadError as exc:
                    observer.protocol_error("invalid_result")
                    observer.call_done(action, ERROR, seconds, exc.error_code)
                    self._reject_result(conn, message_id, exc.error_code, exc.description)
                    raise InvalidResponse(action, exc.error_code, exc.description) from None
            observer.call_done(action, RESULT, seconds, None)
            return reply.payload
        if kind is ocppj.CallError:
            code = reply.error_code
            observer.call_done(
                action, ERROR, seconds, code if code in KNOWN_ERROR_CODES else OTHER_ERROR_CODE
            )
            raise CallErrorResponse(action, code, reply.error_description, reply.error_details)
        if kind is ocppj.FrameError:
            observer.call_done(action, ERROR, seconds, reply.error_code)
            if reply.message_type == ocppj.CALLRESULT:
                self._reject_result(conn, message_id, reply.error_code, reply.description)
            raise InvalidResponse(action, reply.error_code, reply.description)
        observer.call_done(action, DISCONNECTED, seconds, None)
        raise Disconnected(action, f"{action}: {reply.reason}")

    def _reject_result(
        self, conn: _Connection, message_id: str, error_code: str, description: str
    ) -> None:
        """OCPP 2.1: tell the CSMS we could not accept its CALLRESULT (CALLRESULTERROR)."""
        if self.version.extended_rpc:
            error = ocppj.CallResultError(message_id, error_code, description[:255])
            self._send(conn, error.encode(), "callresulterror")

    def send(self, action: str, payload: dict[str, Any]) -> None:
        """Send a SEND (OCPP 2.1): a request the CSMS never answers.

        Does not wait for the CALL slot (there is no reply to wait for). Raises
        :class:`Disconnected` when not connected, :class:`ValueError` when the version
        spoken has no SEND; with ``validate=True`` an invalid payload raises
        :class:`~loadgen.protocols.schemas.PayloadError` before anything is sent.
        """
        conn = self._conn
        if conn is None or conn.down or conn.ws.state is not State.OPEN:
            # before connect() the version spoken is not known yet (``offer``)
            raise Disconnected(action, f"{action}: not connected")
        if not self.version.extended_rpc:
            raise ValueError(f"OCPP {self.version.name} has no SEND message")
        if self.validate:
            schemas.validate(self.version, action, payload)
        self._send(conn, ocppj.Send(self._ids(), action, payload).encode(), "send")

    def _acquire(self) -> None:
        if not self._busy:
            self._busy = True
            return
        waiter = gevent.event.Event()
        self._waiters.append(waiter)
        try:
            waiter.wait()
        except BaseException:
            if waiter.is_set():
                self._release()  # the slot was handed to us: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # hand the slot over; _busy stays True
        else:
            self._busy = False

    # -- closing -------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (closing handshake, at most ``close_timeout`` seconds).

        A waiting caller gets :class:`Disconnected`; ``handler.on_disconnect`` hears
        ``(code, reason)`` unless the connection had already ended. Closing a closed link is
        a no-op.
        """
        conn = self._conn
        if conn is None:
            return
        if not conn.down:
            if conn.ws.state is State.OPEN:
                try:
                    conn.ws.send_close(code, reason)
                except ProtocolError as exc:
                    raise ValueError(f"cannot close with code {code}: {exc}") from None
                self._flush(conn)
            text = f"closed by the station: {code} {reason}".rstrip()
            self._down(conn, code, text, CLOSED_LOCALLY, notify_here=True)
        if conn.finished:
            return
        self._start_closing_timer(conn)  # the CSMS has close_timeout s to hang up
        if gevent.getcurrent() is conn.dispatcher:
            return  # the watcher and the timer finish the closing handshake
        if conn.closer is None:
            conn.closer = gevent.event.Event()
        conn.closer.wait(self.close_timeout + 1)
        self._finish(conn)

    # -- reading: a libev watcher callback, in the hub -----------------------------------

    def _on_readable(self, conn: _Connection) -> None:
        """Feed what the socket has to the protocol and act on it, without blocking.

        This runs in the hub (a watcher callback), not in a greenlet: a parked reader
        greenlet per connection costs ~8.5 KB (docs/design.md). So nothing here may block or
        switch: replies wake their caller through its AsyncResult, the CSMS's CALLs and the
        disconnect notice go to a short-lived greenlet (:meth:`_dispatch`), and frames
        websockets wants sent (pongs, the close echo, CALLERRORs) to one (:meth:`_flush`).
        """
        if conn.finished:
            return
        ws = conn.ws
        try:
            if conn.early_events:
                # Frames that came in the same read as the 101 response (a CSMS may CALL at
                # once): read before this watcher existed, handled before anything newer.
                events, conn.early_events = conn.early_events, []
                self._after_receive(conn, events)
            while ws.state is not State.CLOSED:
                data = self._read(conn)
                if data is None:
                    break  # nothing more for now
                if data:
                    ws.receive_data(data)
                else:
                    ws.receive_eof()
                self._after_receive(conn, ws.events_received())
                if not conn.tls:
                    break  # level-triggered: the watcher fires again if more is there
            if ws.state is State.CLOSED:
                self._finish(conn)
            elif ws.close_expected():
                self._start_closing_timer(conn)  # wait for the CSMS to hang up, not forever
        except OSError as exc:
            # A write that failed first knows the better reason (the read error only echoes it).
            reason = conn.failure or f"connection lost: {exc}"
            self._down(conn, None, reason, CONNECTION_LOST)
            self._finish(conn)
        except Exception:
            # A bug of ours: end this connection, not the hub (which would stop every charger).
            log.exception("%s: the link's reader failed", self.url)
            self._down(conn, None, "internal error in the link", INTERNAL_ERROR)
            self._finish(conn)

    @staticmethod
    def _read(conn: _Connection) -> bytes | None:
        """What the socket has (b"" at EOF), or None when it would block.

        A gevent socket with timeout 0 raises instead of waiting for its own watcher; for
        TLS that is SSLWantReadError, and the caller keeps reading until it comes, since
        OpenSSL may hold decrypted bytes the socket no longer signals.
        """
        sock = conn.sock
        sock.settimeout(0.0)
        try:
            return sock.recv(RECV_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        finally:
            sock.settimeout(None)

    def _after_receive(self, conn: _Connection, events: list[Any]) -> None:
        for event in events:
            if type(event) is Frame:
                self._on_frame(conn, event)
        # Writing may block on a full socket buffer, which the hub must never do: a greenlet
        # writes, and only when no caller's _flush is writing already (it takes these too).
        if conn.ws.writes and not conn.writing:
            gevent.spawn(self._flush, conn)  # pongs, the close frame's echo, CALLERRORs
        # websockets failed the connection while parsing (no CLOSE frame came to say so):
        # the waiting CALL and the handler must still hear it, now rather than at EOF.
        if not conn.down and conn.ws.state is not State.OPEN:
            self._down_after_protocol_failure(conn)

    def _start_closing_timer(self, conn: _Connection) -> None:
        if conn.closing_timer is None and not conn.finished:
            conn.closing_timer = gevent.get_hub().loop.timer(self.close_timeout)
            conn.closing_timer.start(self._finish, conn)

    def _finish(self, conn: _Connection) -> None:
        """The connection is over for good: stop watching, close the socket, once."""
        if conn.finished:
            return
        conn.finished = True
        # libev must stop watching the descriptor before it is closed (and maybe reused).
        for watcher in (conn.watcher, conn.closing_timer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        conn.watcher = conn.closing_timer = None
        self._down(conn, None, conn.failure or "connection lost", CONNECTION_LOST)
        conn.sock.close()
        if conn.closer is not None:
            conn.closer.set()

    def _on_frame(self, conn: _Connection, frame: Frame) -> None:
        # The sans-I/O protocol yields frames, not messages: putting a fragmented message
        # back together is ours (rare in OCPP, but RFC 6455 allows any message to be split).
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._on_message(conn, opcode, frame.data)
            else:
                conn.fragments = [frame.data]
                conn.fragment_opcode = opcode
        elif opcode is Opcode.CONT:
            # websockets checks the order of fragments and the total size (max_size)
            assert conn.fragments is not None and conn.fragment_opcode is not None
            conn.fragments.append(frame.data)
            if frame.fin:
                data = b"".join(conn.fragments)
                opcode = conn.fragment_opcode
                conn.fragments = conn.fragment_opcode = None
                self._on_message(conn, opcode, data)
        elif opcode is Opcode.CLOSE:
            # Down now, not when the socket closes: the waiting CALL fails at once with the
            # CSMS's code and reason, and nothing more is queued on a closing connection.
            received = conn.ws.close_rcvd
            code = received.code if received is not None else None
            text = received.reason if received is not None else ""
            self._down(conn, code, f"closed by the CSMS: {code} {text}".rstrip(), CLOSED_BY_SERVER)
        # PING: websockets has queued the PONG already. PONG: nothing asked for one.

    def _on_message(self, conn: _Connection, opcode: Opcode, data: bytes) -> None:
        if conn.down:
            return  # closing: nothing can be answered, nobody waits for a reply
        if opcode is Opcode.BINARY:
            self.observer.protocol_error("binary_frame")
            return
        try:
            message = ocppj.parse(data, extended=self.version.extended_rpc)
        except ocppj.FrameError as exc:
            self._on_bad_frame(conn, exc)
            return
        # Exact types, not isinstance: parse() returns exactly these classes, and this runs
        # for every message of every charger. CALLs and SENDs reach the station's handler,
        # which may block, so they leave the hub; replies only wake their caller.
        kind = type(message)
        if kind is ocppj.Call:
            self.observer.message("received", "call")
            self._hand_over(conn, message)
        elif kind is ocppj.Send:
            self.observer.message("received", "send")
            self._hand_over(conn, message)
        elif kind is ocppj.CallResultError:
            self._on_result_error(message)
        else:
            self._on_reply(conn, message)

    def _on_bad_frame(self, conn: _Connection, exc: ocppj.FrameError) -> None:
        self.observer.protocol_error("malformed_frame")
        if not exc.answerable:
            # Never answer a reply (nor a SEND). If it was meant for our CALL, that CALL has
            # failed.
            pending = self._pending
            if (
                pending is not None
                and pending.conn is conn
                and pending.message_id == exc.message_id
            ):
                self._complete(pending, exc)
            return
        code = self.version.error_code(exc.error_code)
        error = ocppj.CallError(exc.message_id, code, exc.description[:255])
        self._queue(conn, error.encode(), "error")

    def _on_reply(self, conn: _Connection, message: ocppj.CallResult | ocppj.CallError) -> None:
        is_result = type(message) is ocppj.CallResult
        self.observer.message("received", "result" if is_result else "error")
        pending = self._pending
        # Only the CALL waiting now, on this connection, may take a reply: one to a CALL
        # that timed out (its caller moved on) or from a replaced connection is counted,
        # never handed to whichever CALL happens to be waiting.
        if pending is None or pending.conn is not conn or pending.message_id != message.message_id:
            late = message.message_id in self._timed_out
            self.observer.protocol_error("late_reply" if late else "unknown_reply_id")
            return
        self._complete(pending, message)

    def _on_result_error(self, message: ocppj.CallResultError) -> None:
        """The CSMS could not accept a CALLRESULT of ours: count it and say so, rate-limited."""
        self.observer.message("received", "callresulterror")
        self.observer.protocol_error("callresulterror")
        action = next((a for i, a in self._answered if i == message.message_id), "an unknown CALL")
        quiet.warning(
            "callresulterror",
            self.url,
            f"the CSMS rejected our answer to {action}: {message.error_code} "
            f"{message.error_description[:120]!r}",
        )

    def _complete(self, pending: _Pending, value: Any) -> None:
        self._pending = None
        # Timed here, in the hub, when the reply is read: the round trip must not include
        # how long the caller's greenlet then waits for its turn (that is our load, not the
        # CSMS's latency).
        pending.received_at = _perf_counter()
        pending.result.set(value)

    # -- the handler's greenlet -----------------------------------------------------------

    def _hand_over(self, conn: _Connection, item: Any) -> None:
        """Queue a CSMS CALL (or the disconnect notice) for the handler, which may block:
        it runs in a greenlet that lives only while there is something to hand over."""
        if conn.inbox is None:
            conn.inbox = [item]
        else:
            conn.inbox.append(item)
        if conn.dispatcher is None:
            conn.dispatcher = gevent.spawn(self._dispatch, conn)

    def _dispatch(self, conn: _Connection) -> None:
        # One greenlet per connection, in arrival order: OCPP-J lets the CSMS have one CALL
        # outstanding, and the disconnect notice must come after the CALLs before it.
        try:
            while conn.inbox:
                item = conn.inbox.pop(0)
                if type(item) is ocppj.Call:
                    text, kind = self._answer(item)
                    self._answered.append((item.message_id, item.action))
                    self._send(conn, text, kind)
                elif type(item) is ocppj.Send:
                    self._take(item)
                else:
                    self._notify_down(*item)
        finally:
            conn.inbox = None
            conn.dispatcher = None

    def _answer(self, call: ocppj.Call) -> tuple[str, str]:
        """The encoded reply to a CSMS CALL, and its kind ("result" or "error")."""
        message_id, action = call.message_id, call.action
        # Always, not only with ``validate``: the handler indexes the payload as the schema
        # promises, and a CSMS that breaks it must get the OCPP error, not InternalError.
        # CSMS CALLs are rare, so the ~20 µs do not matter.
        try:
            try:
                schemas.validate(self.version, action, call.payload)
            except schemas.UnknownAction:
                pass  # the handler decides what an unknown action gets
            except schemas.PayloadError as exc:
                self.observer.protocol_error("invalid_call")
                error = ocppj.CallError(message_id, exc.error_code, exc.description[:255])
                return error.encode(), "error"
            try:
                result = self.handler.on_call(action, call.payload)
                if not isinstance(result, dict):
                    raise TypeError(f"on_call returned {type(result).__name__}, not a dict")
                return ocppj.CallResult(message_id, result).encode(), "result"
            except CallErrorReply as exc:
                code = self.version.error_code(exc.error_code)
                reply = ocppj.CallError(message_id, code, exc.description[:255], exc.details)
                return reply.encode(), "error"
        except Exception:
            log.exception("%s: the station failed to answer %s", self.url, action)
            code = self.version.error_code(ocppj.ErrorCode.INTERNAL_ERROR)
            description = f"the charging station failed to process {action}"[:255]
            return ocppj.CallError(message_id, code, description).encode(), "error"

    def _take(self, send: ocppj.Send) -> None:
        """Hand a CSMS SEND to the handler; nothing is ever sent back, whatever happens."""
        action = send.action
        try:
            schemas.validate(self.version, action, send.payload)
        except schemas.UnknownAction:
            pass  # the handler decides
        except schemas.PayloadError as exc:
            self.observer.protocol_error("invalid_send")
            quiet.warning("invalid_send", self.url, f"{action}: {exc.description[:200]}")
            return
        try:
            self.handler.on_call(action, send.payload)
        except CallErrorReply as exc:
            self.observer.protocol_error("send_failed")
            quiet.warning("send_failed", self.url, f"{action}: {exc}")
        except Exception:
            self.observer.protocol_error("send_failed")
            log.exception("%s: the station failed to take the SEND %s", self.url, action)

    # -- writing and ending --------------------------------------------------------------

    def _queue(self, conn: _Connection, text: str, kind: str) -> bool:
        """Hand a frame to the protocol (not to the socket yet); False if too late."""
        if conn.down or conn.ws.state is not State.OPEN:
            return False
        conn.ws.send_text(text.encode())
        self.observer.message("sent", kind)
        return True

    def _send(self, conn: _Connection, text: str, kind: str) -> None:
        if self._queue(conn, text, kind):
            self._flush(conn)

    def _flush(self, conn: _Connection) -> None:
        """Write what the protocol has queued, in its order, from one greenlet at a time.

        A greenlet that finds another one writing (blocked on a full socket buffer) returns:
        the writer picks its frames up in order after its own. Never called in the hub (it
        may block). A write error ends the connection from the hub, so the disconnect is
        handled in one place and never inside a caller that holds the CALL slot.
        """
        if conn.writing:
            return
        conn.writing = True
        sock = conn.sock
        try:
            while True:
                chunks = conn.ws.data_to_send()
                if not chunks:
                    return
                for chunk in chunks:
                    if chunk:
                        # send() first: gevent's sendall() costs a getsockopt() system call
                        # per frame; it is needed only when the socket buffer is full.
                        sent = sock.send(chunk)
                        if sent < len(chunk):
                            sock.sendall(chunk[sent:])
                    else:
                        sock.shutdown(socket.SHUT_WR)  # websockets' "send EOF"
        except OSError as exc:
            self._break(conn, f"connection lost: {exc}")
        except BaseException:
            # Interrupted mid-frame (a timeout, a kill): the byte stream is broken for good.
            self._break(conn, "a write was interrupted")
            raise
        finally:
            conn.writing = False

    def _break(self, conn: _Connection, reason: str) -> None:
        if conn.failure is None:
            conn.failure = reason
            gevent.get_hub().loop.run_callback(self._lost, conn)

    def _lost(self, conn: _Connection) -> None:
        self._down(conn, None, conn.failure or "connection lost", CONNECTION_LOST)
        self._finish(conn)

    def _down_after_protocol_failure(self, conn: _Connection) -> None:
        """websockets failed the connection (bad frame, too big, EOF): say why."""
        ws = conn.ws
        failure = ws.parser_exc
        if isinstance(failure, PayloadTooBig):
            kind = MESSAGE_TOO_BIG
        elif failure is None or isinstance(failure, EOFError):
            kind = CONNECTION_LOST
        else:
            kind = WEBSOCKET_ERROR
        if kind != CONNECTION_LOST:
            self.observer.protocol_error(kind)
        code = ws.close_sent.code if ws.close_sent is not None else None
        self._down(conn, code, f"{kind}: {failure}" if failure else kind, kind)

    def _down(
        self,
        conn: _Connection,
        code: int | None,
        reason: str,
        kind: str,
        notify_here: bool = False,
    ) -> None:
        """The connection ended: fail the waiting CALL, tell observer and handler, once.

        The handler hears it after the CSMS CALLs that came before, in the handler's
        greenlet; ``notify_here`` (a local close) tells it in this greenlet if none is
        queued.
        """
        if conn.down:
            return
        conn.down = True
        pending = self._pending
        if pending is not None and pending.conn is conn:
            self._complete(pending, _Lost(reason))
        log.debug("%s: disconnected (%s): %s", self.url, kind, reason)
        self.observer.disconnected(kind)
        if notify_here and conn.dispatcher is None:
            self._notify_down(code, reason)
        else:
            self._hand_over(conn, (code, reason))

    def _notify_down(self, code: int | None, reason: str) -> None:
        try:
            self.handler.on_disconnect(code, reason)
        except Exception:
            log.exception("%s: on_disconnect failed", self.url)
