"""What a stub is told: every option of ``python -m csms_stub``, as one value.

Its own module so that each part of the stub (server, API, service) can take the settings it
needs without importing the part that assembles them (:mod:`csms_stub.app`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from csms_stub.service import DEFAULT_TARIFF_PER_KWH
from csms_stub.store import DEFAULT_DATABASE_URL
from loadgen.fleet import Fleet
from loadgen.idtokens import IdToken


@dataclass
class StubConfig:
    host: str = "0.0.0.0"
    port: int = 9000
    api_host: str = "0.0.0.0"
    api_port: int = 8080
    database_url: str = DEFAULT_DATABASE_URL
    database_schema: str | None = None
    fleet: Fleet | None = None
    strict: bool = False
    heartbeat_interval: int = 30
    tariff: float = DEFAULT_TARIFF_PER_KWH
    on_duplicate: str = "replace"  # or "reject"
    require_auth: bool = False
    #: used for chargers the fleet gives no password; never logged
    auth_password: str | None = field(default=None, repr=False)
    blocked_tokens: tuple[str, ...] = ()
    #: the only idTokens the stub knows (others are Invalid); None: every token is Accepted
    id_tokens: tuple[IdToken, ...] | None = None
    #: answer a token malformed for its type with CALLERROR PropertyConstraintViolation
    strict_id_tokens: bool = False
    #: refuse a CALL with a timestamp more than this many seconds in the future; None: off
    reject_future_timestamps: float | None = None
    max_message_size: int = 256 * 1024
    call_timeout: float = 30.0
    ping_interval: float = 0.0
    flush_interval: float = 0.05
    #: acknowledge a transaction message only once its rows are committed (survives SIGKILL)
    durable: bool = False
    #: longest wait on the database for an API read or a --durable acknowledgement, in s
    store_timeout: float = 10.0
    #: longest a stop may take writing what is queued, in s; what is left is reported
    shutdown_timeout: float = 10.0
    # A known capacity ceiling, for testing a capacity search against the stub:
    #: refuse handshakes (HTTP 503) while this many chargers are connected; 0: no limit
    max_connections: int = 0
    #: delay every reply by (connected - slow_above) * slow_ms_per_charger ms, at most
    #: slow_max_ms; off while slow_ms_per_charger is 0
    slow_above: int = 0
    slow_ms_per_charger: float = 0.0
    slow_max_ms: float = 60_000.0
    #: answer at most this many BootNotifications per second overall, the rest in arrival
    #: order (a registration bottleneck); 0: no limit
    max_boot_rate: float = 0.0
    #: while more than errors_above chargers are connected, answer this share (0..1) of the
    #: chargers' CALLs with a CALLERROR InternalError instead of handling them; 0: off
    error_ratio: float = 0.0
    errors_above: int = 0
    #: seeds the draw of which CALLs get that error (tests); None: unpredictable
    error_seed: int | None = None
