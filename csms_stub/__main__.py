"""``python -m csms_stub``: run the CSMS until SIGINT or SIGTERM, then flush and exit."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

from csms_stub.app import Stub, StubConfig
from csms_stub.store import DEFAULT_DATABASE_URL
from loadgen import fleet as fleets
from loadgen import idtokens, limits

_Number = TypeVar("_Number", int, float)


def _non_negative(kind: Callable[[str], _Number]) -> Callable[[str], _Number]:
    """An argparse type: ``kind``, refusing negative values (0 means off for these)."""

    def parse(text: str) -> _Number:
        value = kind(text)
        if not value >= 0:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names it in "invalid int value"
    return parse


def _share(text: str) -> float:
    """An argparse type: a float from 0 to 1."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, not {text}")
    return value


_share.__name__ = "float"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csms_stub",
        description="A small OCPP 1.6 / 2.0.1 / 2.1 CSMS with a database and an HTTP API.",
    )
    parser.add_argument("--host", default="0.0.0.0", help="OCPP WebSocket address")
    parser.add_argument("--port", type=int, default=9000, help="OCPP WebSocket port (9000)")
    parser.add_argument("--api-host", default="0.0.0.0", help="HTTP API address")
    parser.add_argument("--api-port", type=int, default=8080, help="HTTP API port (8080)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
        help="SQLAlchemy URL, e.g. postgresql://user@host/db (default: $DATABASE_URL or "
        f"{DEFAULT_DATABASE_URL})",
    )
    parser.add_argument("--database-schema", help="PostgreSQL schema to use (created if missing)")
    parser.add_argument("--fleet", help="fleet TOML file to preload (sites, chargers, passwords)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="reject BootNotification from chargers not in the fleet",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=int,
        default=30,
        help="heartbeat interval in seconds returned at boot (30)",
    )
    parser.add_argument(
        "--tariff", type=float, default=150.0, help="price per kWh, returned as totalCost (150 KRW)"
    )
    parser.add_argument(
        "--on-duplicate",
        choices=("replace", "reject"),
        default="replace",
        help="a second connection for a connected charger id replaces the "
        "first (default) or is rejected",
    )
    parser.add_argument(
        "--require-auth",
        action="store_true",
        help="require HTTP Basic auth (security profile 1): the fleet's "
        "per-charger passwords, else $CSMS_AUTH_PASSWORD",
    )
    parser.add_argument(
        "--blocked-token",
        action="append",
        default=[],
        help="an idToken to answer Blocked (repeatable)",
    )
    parser.add_argument(
        "--id-token-file",
        metavar="PATH",
        help="the only idTokens the stub knows, one a line: VALUE or VALUE,TYPE (# comments); "
        "others, and known ones presented with another type, are answered Invalid. A "
        "--fleet's id_tokens are known too (a fleet with tokens restricts on its own)",
    )
    parser.add_argument(
        "--id-token-type",
        default=idtokens.DEFAULT_TYPE,
        help="IdTokenEnumType of known tokens listed without one (ISO14443; a 2.1 charger's "
        "may be any other type of 1 to 20 characters, such as VIN)",
    )
    parser.add_argument(
        "--strict-id-tokens",
        action="store_true",
        help="answer an idToken malformed for its type (ISO14443: 8 or 14 hex digits, "
        "ISO15693: 16, eMAID, ...; a 1.6 idTag: printable ASCII) with CALLERROR "
        "PropertyConstraintViolation, as CitrineOS does",
    )
    parser.add_argument(
        "--reject-future-timestamps",
        nargs="?",
        const=5.0,
        default=None,
        type=_non_negative(float),
        metavar="S",
        help="answer a CALL carrying a timestamp more than S seconds (default 5) ahead of "
        "the CSMS's clock with CALLERROR PropertyConstraintViolation, unstored, as a CSMS "
        "that bills by timestamps must (counted in csms_stub_future_timestamps_total)",
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=256 * 1024,
        help="largest accepted frame in bytes; larger ones close with 1009",
    )
    parser.add_argument(
        "--call-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for a charger's reply to a CSMS CALL",
    )
    parser.add_argument(
        "--durable",
        action="store_true",
        help="acknowledge a transaction message (TransactionEvent; 1.6 Start/StopTransaction, "
        "MeterValues) only once its rows are committed, so that not even SIGKILL loses what "
        "was acknowledged; replies wait for the next batch write (group commit)",
    )
    parser.add_argument(
        "--store-timeout",
        type=_non_negative(float),
        default=10.0,
        metavar="S",
        help="longest wait on the database for an API read (then 503) or a --durable "
        "acknowledgement (then the connection closes unacknowledged) (10)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=_non_negative(float),
        default=10.0,
        metavar="S",
        help="on SIGTERM/SIGINT, stop writing queued rows after S seconds, report what could "
        "not be written and exit 1 (10)",
    )
    ceiling = parser.add_argument_group(
        "capacity ceiling",
        "make the stub saturate at a known load, to give a capacity search a known ceiling",
    )
    ceiling.add_argument(
        "--max-connections",
        type=_non_negative(int),
        default=0,
        metavar="N",
        help="refuse new WebSocket handshakes with HTTP 503 while N chargers are connected "
        "(a charger replacing its own connection is let in); 0: no limit (default)",
    )
    ceiling.add_argument(
        "--max-boot-rate",
        type=_non_negative(float),
        default=0.0,
        metavar="R",
        help="answer at most R BootNotifications per second overall; the rest wait their turn "
        "in arrival order (replies of other actions and connections are not held up); "
        "0: no limit (default)",
    )
    ceiling.add_argument(
        "--slow-above",
        type=_non_negative(int),
        default=0,
        metavar="N",
        help="with --slow-ms-per-charger: delay replies while more than N chargers are "
        "connected (0)",
    )
    ceiling.add_argument(
        "--slow-ms-per-charger",
        type=_non_negative(float),
        default=0.0,
        metavar="MS",
        help="delay every reply by MS milliseconds per charger connected above --slow-above "
        "(other chargers are not held up); 0: off (default)",
    )
    ceiling.add_argument(
        "--slow-max-ms",
        type=_non_negative(float),
        default=60_000.0,
        metavar="MS",
        help="cap of that added delay in milliseconds (60000)",
    )
    ceiling.add_argument(
        "--error-ratio",
        type=_share,
        default=0.0,
        metavar="R",
        help="answer a share R (0 to 1) of the chargers' CALLs with a CALLERROR InternalError "
        "instead of handling them (nothing is stored for those), while more than "
        "--errors-above chargers are connected; 0: off (default)",
    )
    ceiling.add_argument(
        "--errors-above",
        type=_non_negative(int),
        default=0,
        metavar="N",
        help="with --error-ratio: inject errors only while more than N chargers are connected (0)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def known_id_tokens(
    token_file: str | None, fleet: fleets.Fleet | None, token_type: str
) -> tuple[idtokens.IdToken, ...] | None:
    """The tokens of ``--id-token-file`` and the fleet's, typed (``token_type`` for those
    without one); None when there are none: every token is then Accepted."""
    listed = idtokens.load_file(token_file) if token_file else []
    if fleet is not None:
        listed += [token for group in fleet.id_tokens.values() for token in group]
    if not token_file and not listed:
        return None
    default = idtokens.normalise_type(token_type)
    typed = [idtokens.IdToken(t.value, t.type or default, t.where) for t in listed]
    idtokens.check_unique(typed)
    return tuple(typed)


def config_from_args(args: argparse.Namespace) -> StubConfig:
    fleet = fleets.load(args.fleet) if args.fleet else None
    return StubConfig(
        host=args.host,
        port=args.port,
        api_host=args.api_host,
        api_port=args.api_port,
        database_url=args.database_url,
        database_schema=args.database_schema,
        fleet=fleet,
        strict=args.strict,
        heartbeat_interval=args.heartbeat_interval,
        tariff=args.tariff,
        on_duplicate=args.on_duplicate,
        require_auth=args.require_auth,
        auth_password=os.environ.get("CSMS_AUTH_PASSWORD") or None,
        blocked_tokens=tuple(args.blocked_token),
        id_tokens=known_id_tokens(args.id_token_file, fleet, args.id_token_type),
        strict_id_tokens=args.strict_id_tokens,
        reject_future_timestamps=args.reject_future_timestamps,
        max_message_size=args.max_message_size,
        call_timeout=args.call_timeout,
        durable=args.durable,
        store_timeout=args.store_timeout,
        shutdown_timeout=args.shutdown_timeout,
        max_connections=args.max_connections,
        max_boot_rate=args.max_boot_rate,
        slow_above=args.slow_above,
        slow_ms_per_charger=args.slow_ms_per_charger,
        slow_max_ms=args.slow_max_ms,
        error_ratio=args.error_ratio,
        errors_above=args.errors_above,
    )


def tune_gc() -> None:
    """Keep the collector's full passes rare and short in a long-running server.

    Holding 10,000 chargers the stub tracks ~900k objects, and every full (generation 2)
    collection walks them all: a 300-400 ms stall of the event loop, seen as heartbeat
    latency. Freezing what start-up created (~190k objects: modules, schemas, SQLAlchemy
    metadata) takes those out of every later pass, and a larger generation-0 threshold lets
    short-lived objects (queued rows, frames) die before they are promoted, so full passes
    come far less often. Only the command does this; an embedded Stub leaves gc alone.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


async def serve(config: StubConfig) -> dict[str, int]:
    """Serve until SIGINT/SIGTERM; the rows that could not be written, by table."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    stub = Stub(config)
    await stub.start()
    tune_gc()
    log = logging.getLogger("csms_stub")
    log.info(
        "OCPP on ws://%s:%d/<charger id> (ocpp2.1, ocpp2.0.1, ocpp1.6); HTTP API on http://%s:%d; "
        "database %s",
        config.host,
        stub.port,
        config.api_host,
        stub.api_port if config.api_port >= 0 else -1,
        stub.store.dialect,
    )
    if config.max_boot_rate:
        log.info(
            "capacity ceiling: at most %g BootNotifications answered per second",
            config.max_boot_rate,
        )
    if config.max_connections or config.slow_ms_per_charger:
        log.info(
            "capacity ceiling: at most %s connections; replies +%g ms per charger above %d "
            "(at most %g ms)",
            config.max_connections or "unlimited",
            config.slow_ms_per_charger,
            config.slow_above,
            config.slow_max_ms,
        )
    if config.error_ratio:
        log.info(
            "capacity ceiling: CALLERROR InternalError for %g of CALLs while more than %d "
            "chargers are connected",
            config.error_ratio,
            config.errors_above,
        )
    await stop.wait()
    log.info(
        "stopping: closing connections and writing queued rows (at most %g s)",
        config.shutdown_timeout,
    )
    unwritten = await stub.stop()
    if unwritten:
        log.error(
            "stopped without writing %d acknowledged rows (%s): the database did not take them "
            "within --shutdown-timeout %g s",
            sum(unwritten.values()),
            ", ".join(f"{table} {count}" for table, count in sorted(unwritten.items())),
            config.shutdown_timeout,
        )
    else:
        log.info("stopped")
    return unwritten


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.log_level.upper() != "DEBUG":
        # One line per connection is noise with thousands of chargers.
        logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
    except (fleets.FleetError, idtokens.IdTokenError) as exc:
        print(f"csms_stub: {exc}", file=sys.stderr)
        return 2
    # Every charger holds a socket: take every file the hard limit allows (the soft limit is
    # often 1,024), and say how many chargers that is.
    _, open_files = limits.raise_open_file_limit()
    logging.getLogger("csms_stub").info(
        "open-file limit %d: room for about %d chargers",
        open_files,
        limits.users_that_fit(open_files),
    )
    try:
        unwritten = asyncio.run(serve(config))
    except OSError as exc:
        print(f"csms_stub: cannot start: {exc}", file=sys.stderr)
        return 1
    return 1 if unwritten else 0


if __name__ == "__main__":
    sys.exit(main())
