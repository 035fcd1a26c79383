"""The CSMS's domain: chargers, connectors, transactions, costs and statistics.

State lives in memory (the message path never waits for the database) and every change is
queued to the :class:`~csms_stub.store.Store` before the charger is answered. On start the
registry and the open transactions are loaded back, so a restarted stub continues the
transactions its chargers resume.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa

from csms_stub import store as tables
from csms_stub.store import Store, Unstorable
from loadgen import idtokens
from loadgen.fleet import Fleet
from loadgen.ocppj import ErrorCode
from loadgen.protocols import Version, parse_timestamp, schemas, v16, v201

log = logging.getLogger(__name__)

DEFAULT_TARIFF_PER_KWH = 150.0  # KRW, the seed's tariff
#: the largest meter reading accepted, in Wh or W: far beyond any charger, and small enough
#: that energies and costs computed from readings stay finite numbers
MAX_READING = 1e12


def utcnow() -> datetime:
    return datetime.now(UTC)


def storable_timestamp(text: str) -> datetime:
    """An OCPP dateTime as aware UTC, or :class:`Unstorable` for one the CSMS cannot hold.

    The schema's format check passes dates such as ``9999-12-31T23:59:59-01:00`` that fall
    outside what a datetime (and so the database columns) can hold once in UTC."""
    try:
        return parse_timestamp(text)
    except OverflowError:
        raise Unstorable(f"timestamp {text[:40]!r} is outside the range this CSMS stores") from None
    except ValueError:
        raise Unstorable(
            f"timestamp {text[:40]!r} is not a valid date and time", ErrorCode.FORMAT_VIOLATION
        ) from None


class RemoteCallFailed(Exception):
    """A CSMS-initiated CALL that did not succeed; ``reason`` names why for the API."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Connection(Protocol):
    """What the service needs of a live charger connection (see ``server.py``)."""

    charger_id: str
    version_name: str
    version: Version
    #: what this connection answers: the actions a charger sends
    handlers: Mapping[str, Any]

    async def call(
        self, action: str, payload: dict[str, Any], timeout: float
    ) -> dict[str, Any]: ...

    async def close(self, code: int, reason: str) -> None: ...


@dataclass
class ChargerState:
    charger_id: str
    station_id: str | None = None
    site_name: str | None = None
    lat: float | None = None
    lon: float | None = None
    rated_power_kw: float | None = None
    vendor: str | None = None
    model: str | None = None
    serial_number: str | None = None
    firmware_version: str | None = None
    ocpp_version: str | None = None
    status: str = "Unknown"
    connected: bool = False
    last_boot_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    boot_count: int = 0
    session_count: int = 0
    energy_total_kwh: float = 0.0
    cost_total: float = 0.0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    # memory only
    known: bool = False  # in the fleet or registered by a boot
    boot_status: str | None = None
    connectors: dict[tuple[int, int], str] = field(default_factory=dict)

    _COLUMNS = tuple(c.name for c in tables.charger_info.columns)

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._COLUMNS}

    def summary_status(self, charging: bool) -> str:
        if charging:
            return "Charging"
        statuses = set(self.connectors.values())
        for status in (
            "Faulted",
            "Unavailable",
            "Occupied",
            "Preparing",
            "SuspendedEV",
            "SuspendedEVSE",
            "Finishing",
            "Reserved",
            "Available",
        ):
            if status in statuses:
                return status
        return self.status


@dataclass
class TransactionState:
    charger_id: str
    transaction_id: str
    station_id: str | None
    ocpp_version: str
    evse_id: int | None = None
    connector_id: int | None = None
    id_token: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    meter_start_wh: float | None = None
    meter_stop_wh: float | None = None
    energy_consumed: float = 0.0
    cost: float = 0.0
    stop_reason: str | None = None
    event_count: int = 0
    offline_event_count: int = 0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    # memory only
    seq_nos: set[int] = field(default_factory=set)
    power_w: float = 0.0
    charging_state: str | None = None
    remote_start_id: int | None = None

    _COLUMNS = tuple(c.name for c in tables.charger_usage_log.columns)

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._COLUMNS}

    @property
    def open(self) -> bool:
        return self.end_time is None

    def add_register(self, wh: float) -> None:
        # Registers only grow; min/max keeps the energy right whatever order readings
        # arrive in (offline replays, duplicates).
        self.meter_start_wh = wh if self.meter_start_wh is None else min(self.meter_start_wh, wh)
        self.meter_stop_wh = wh if self.meter_stop_wh is None else max(self.meter_stop_wh, wh)


@dataclass
class MeterReading:
    timestamp: datetime
    energy_wh: float | None = None
    power_w: float | None = None
    soc: float | None = None


class Service:
    def __init__(
        self,
        store: Store,
        *,
        fleet: Fleet | None = None,
        strict: bool = False,
        heartbeat_interval: int = 30,
        tariff: float = DEFAULT_TARIFF_PER_KWH,
        blocked_tokens: Iterable[str] = (),
        call_timeout: float = 30.0,
        id_tokens: Iterable[idtokens.IdToken] | None = None,
        strict_id_tokens: bool = False,
        on_authorize: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.strict = strict
        self.heartbeat_interval = heartbeat_interval
        self.tariff = tariff
        self.blocked_tokens = frozenset(blocked_tokens)
        self.call_timeout = call_timeout
        #: the only idTokens this CSMS knows (upper-cased value -> type), or None: any
        self.known_tokens: dict[str, str | None] | None = None
        if id_tokens is not None:
            self.known_tokens = {token.value.upper(): token.type for token in id_tokens}
        self.strict_id_tokens = strict_id_tokens
        #: called with each verdict (Accepted, Blocked, Invalid, Malformed): a metric
        self.on_authorize = on_authorize
        self.chargers: dict[str, ChargerState] = {}
        self.transactions: dict[tuple[str, str], TransactionState] = {}
        self.connections: dict[str, Connection] = {}
        self.peak_power_w = 0.0
        self.current_power_w = 0.0
        self.closed_energy_kwh = 0.0
        self.closed_cost = 0.0
        self.closed_transactions = 0
        self._remote_start_ids = itertools.count(1)
        self._transaction_ids_16 = itertools.count(1)
        self._start_waiters: dict[tuple[str, str], asyncio.Future[str]] = {}
        self._recently_closed: dict[tuple[str, str], TransactionState] = {}
        # charger id -> its open transactions, so per-event work does not scan them all
        self._open_by_charger: dict[str, dict[str, TransactionState]] = {}

    # -- start-up ------------------------------------------------------------------------

    async def load(self) -> None:
        """Load the registry, the fleet and the open transactions from the database."""
        for row in await self.store.fetch(sa.select(tables.charger_info)):
            charger = ChargerState(**row)
            charger.connected = False
            charger.known = True
            self.chargers[charger.charger_id] = charger
        if self.fleet is not None:
            for spec in self.fleet.chargers.values():
                charger = self.chargers.get(spec.id) or ChargerState(spec.id)
                site = self.fleet.sites[spec.site_id]
                charger.station_id = site.id
                charger.site_name = site.name
                charger.lat, charger.lon = site.lat, site.lon
                charger.rated_power_kw = spec.rated_power_w / 1000
                charger.known = True
                self.chargers[spec.id] = charger
                self.store.upsert(tables.charger_info, charger.row())
        for charger in self.chargers.values():
            if charger.connected is False:
                self.store.upsert(tables.charger_info, charger.row())
        usage = tables.charger_usage_log
        for row in await self.store.fetch(sa.select(usage).where(usage.c.end_time.is_(None))):
            self._add_open(TransactionState(**row))
        recent = (
            sa.select(usage)
            .where(usage.c.end_time.is_not(None))
            .order_by(usage.c.end_time.desc())
            .limit(10_000)
        )
        for row in reversed(await self.store.fetch(recent)):
            transaction = TransactionState(**row)
            self._recently_closed[(transaction.charger_id, transaction.transaction_id)] = (
                transaction
            )
        events = tables.transaction_event
        open_ids = {tid for (_, tid) in self.transactions}
        if open_ids:
            query = sa.select(events.c.charger_id, events.c.transaction_id, events.c.seq_no)
            for row in await self.store.fetch(query.where(events.c.transaction_id.in_(open_ids))):
                transaction = self.transactions.get((row["charger_id"], row["transaction_id"]))
                if transaction is not None:
                    transaction.seq_nos.add(row["seq_no"])
        closed = await self.store.fetch(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(usage.c.energy_consumed), 0.0),
                sa.func.coalesce(sa.func.sum(usage.c.cost), 0.0),
            ).where(usage.c.end_time.is_not(None))
        )
        count, energy, cost = closed[0].values()
        self.closed_transactions, self.closed_energy_kwh, self.closed_cost = count, energy, cost
        highest = 0
        for row in await self.store.fetch(
            sa.select(usage.c.transaction_id).where(usage.c.ocpp_version == "1.6")
        ):
            if row["transaction_id"].isdigit():
                highest = max(highest, int(row["transaction_id"]))
        self._transaction_ids_16 = itertools.count(highest + 1)

    # -- connections ---------------------------------------------------------------------

    def is_allowed(self, charger_id: str) -> bool:
        return not self.strict or self.chargers.get(charger_id, ChargerState("")).known

    def password_of(self, charger_id: str) -> str | None:
        if self.fleet is None:
            return None
        spec = self.fleet.chargers.get(charger_id)
        return spec.password if spec else None

    def connected(self, connection: Connection) -> None:
        charger = self._charger(connection.charger_id)
        charger.connected = True
        charger.ocpp_version = connection.version_name
        self.connections[connection.charger_id] = connection
        self._save_charger(charger)
        self.log_event(charger.charger_id, "connect", None, {"ocpp": connection.version_name})

    def disconnected(self, connection: Connection, code: int | None, reason: str) -> None:
        if self.connections.get(connection.charger_id) is not connection:
            return  # replaced by a newer connection: that one is the live one
        del self.connections[connection.charger_id]
        charger = self._charger(connection.charger_id)
        charger.connected = False
        self._save_charger(charger)
        self.log_event(charger.charger_id, "disconnect", None, {"code": code, "reason": reason})

    def log_event(
        self,
        charger_id: str | None,
        kind: str,
        action: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        if action is not None and (len(action) > 48 or "\x00" in action):
            # An unknown action is logged as sent: it must not be what cannot be stored.
            action = action.replace("\x00", "\ufffd")[:48]
        self.store.insert(
            tables.event_log,
            {
                "charger_id": charger_id,
                "timestamp": utcnow(),
                "kind": kind,
                "action": action,
                "detail": detail,
            },
        )

    # -- what chargers report ------------------------------------------------------------

    def boot(self, charger_id: str, identity: dict[str, str | None], reason: str | None) -> str:
        """Register a boot; returns the registration status to answer with."""
        charger = self._charger(charger_id)
        status = "Accepted" if self.is_allowed(charger_id) else "Rejected"
        charger.boot_status = status
        now = utcnow()
        if status == "Accepted":
            charger.known = True
            charger.vendor = identity.get("vendor") or charger.vendor
            charger.model = identity.get("model") or charger.model
            charger.serial_number = identity.get("serial_number") or charger.serial_number
            charger.firmware_version = identity.get("firmware_version") or charger.firmware_version
            charger.boot_count += 1
            charger.last_boot_at = now
            self._save_charger(charger)
        self.log_event(
            charger_id, "boot", "BootNotification", {"status": status, "reason": reason, **identity}
        )
        return status

    def heartbeat(self, charger_id: str) -> datetime:
        charger = self._charger(charger_id)
        now = utcnow()
        charger.last_heartbeat_at = now
        self._save_charger(charger)
        self.log_event(charger_id, "heartbeat", "Heartbeat")
        return now

    def connector_status(
        self,
        charger_id: str,
        evse_id: int,
        connector_id: int,
        status: str,
        detail: dict[str, Any] | None = None,
        message: str = "StatusNotification",
    ) -> None:
        """A connector's status, from ``message`` (a StatusNotification, or a NotifyEvent's
        AvailabilityState event)."""
        charger = self._charger(charger_id)
        previous = charger.connectors.get((evse_id, connector_id))
        charger.connectors[(evse_id, connector_id)] = status
        charger.status = charger.summary_status(self._is_charging(charger_id))
        self._save_charger(charger)
        self.log_event(
            charger_id,
            "status",
            message,
            {
                "evse_id": evse_id,
                "connector_id": connector_id,
                "status": status,
                "previous": previous,
                **(detail or {}),
            },
        )

    def authorize(self, token: str, token_type: str | None = None) -> str:
        """The CSMS's verdict on an idToken (2.0.1: of ``token_type``; 1.6: an idTag, None).

        With ``strict_id_tokens`` a token malformed for its type raises :class:`Unstorable`
        (CALLERROR PropertyConstraintViolation, as CitrineOS answers); with a known-token
        list, others, and known ones of another type, are Invalid."""
        if self.strict_id_tokens:
            problem = idtokens.format_problem(token, token_type)
            if problem is not None:
                self._count_verdict("Malformed")
                raise Unstorable(f"idToken {token[:40]!r}: {problem}")
        if token in self.blocked_tokens:
            status = "Blocked"
        elif self.known_tokens is None:
            status = "Accepted"
        else:
            known_type = self.known_tokens.get(token.upper(), "")
            # 1.6 idTags carry no type: the value alone identifies them
            known = known_type != "" and (token_type is None or known_type == token_type)
            status = "Accepted" if known else "Invalid"
        self._count_verdict(status)
        return status

    def _count_verdict(self, status: str) -> None:
        if self.on_authorize is not None:
            self.on_authorize(status)

    def transaction_event(
        self,
        charger_id: str,
        transaction_id: str,
        *,
        event_type: str,
        seq_no: int | None,
        timestamp: datetime,
        trigger_reason: str | None = None,
        offline: bool = False,
        evse_id: int | None = None,
        connector_id: int | None = None,
        id_token: str | None = None,
        charging_state: str | None = None,
        stopped_reason: str | None = None,
        remote_start_id: int | None = None,
        readings: Iterable[MeterReading] = (),
    ) -> TransactionState:
        """Apply one transaction event (2.0.1 TransactionEvent or its 1.6 equivalents).

        An event whose seqNo was seen before changes nothing (a replay or a duplicate) but is
        still answered normally, with the transaction's running cost.
        """
        key = (charger_id, transaction_id)
        transaction = self.transactions.get(key) or self._recently_closed.get(key)
        charger = self._charger(charger_id)
        if transaction is not None and not transaction.open:
            # Anything after Ended is a retry of something already stored.
            self.log_event(
                charger_id,
                "duplicate",
                event_type,
                {"transaction_id": transaction_id, "seq_no": seq_no},
            )
            return transaction
        if transaction is None:
            transaction = TransactionState(
                charger_id,
                transaction_id,
                charger.station_id,
                charger.ocpp_version or "2.0.1",
                start_time=timestamp,
            )
            self._add_open(transaction)
        if seq_no is None:
            seq_no = transaction.event_count  # 1.6 has no seqNo: number events as they come
        if seq_no in transaction.seq_nos:
            self.log_event(
                charger_id,
                "duplicate",
                "TransactionEvent",
                {"transaction_id": transaction_id, "seq_no": seq_no},
            )
            return transaction
        transaction.seq_nos.add(seq_no)
        transaction.event_count += 1
        transaction.offline_event_count += int(offline)
        transaction.evse_id = evse_id if evse_id is not None else transaction.evse_id
        if connector_id is not None:
            transaction.connector_id = connector_id
        transaction.id_token = id_token or transaction.id_token
        transaction.charging_state = charging_state or transaction.charging_state
        if remote_start_id is not None:
            transaction.remote_start_id = remote_start_id
        start = transaction.start_time
        if event_type == "Started" or (start is not None and timestamp < start):
            transaction.start_time = timestamp
        now = utcnow()
        for reading in readings:
            if reading.energy_wh is not None:
                transaction.add_register(reading.energy_wh)
            if reading.power_w is not None and event_type != "Ended":
                self._set_power(transaction, reading.power_w)
            if reading.power_w is not None or reading.energy_wh is not None:
                self.store.insert(
                    tables.power_consumption,
                    {
                        "charger_id": charger_id,
                        "transaction_id": transaction_id,
                        "timestamp": reading.timestamp,
                        "power_reading": reading.power_w,
                        "energy_register_wh": reading.energy_wh,
                        "soc": reading.soc,
                    },
                )
        if transaction.meter_start_wh is not None and transaction.meter_stop_wh is not None:
            transaction.energy_consumed = (
                transaction.meter_stop_wh - transaction.meter_start_wh
            ) / 1000
        transaction.cost = round(transaction.energy_consumed * self.tariff, 2)
        transaction.updated_at = now
        was_open = transaction.open
        if event_type == "Ended" and was_open:
            transaction.end_time = max(timestamp, transaction.start_time or timestamp)
            transaction.stop_reason = stopped_reason or transaction.stop_reason or "Local"
            self._set_power(transaction, 0.0)
            self.closed_transactions += 1
            self.closed_energy_kwh += transaction.energy_consumed
            self.closed_cost += transaction.cost
            charger.session_count += 1
            charger.energy_total_kwh += transaction.energy_consumed
            charger.cost_total += transaction.cost
        self.store.insert(
            tables.transaction_event,
            {
                "charger_id": charger_id,
                "transaction_id": transaction_id,
                "seq_no": seq_no,
                "event_type": event_type,
                "trigger_reason": trigger_reason,
                "timestamp": timestamp,
                "offline": offline,
                "received_at": now,
            },
        )
        self.store.upsert(tables.charger_usage_log, transaction.row())
        if not transaction.open:
            # Keep the closed state for late duplicates, but drop it from the live set.
            self.transactions.pop(key, None)
            self._open_by_charger.get(charger_id, {}).pop(transaction_id, None)
            self._recently_closed[key] = transaction
            if len(self._recently_closed) > 10_000:
                self._recently_closed.pop(next(iter(self._recently_closed)))
        charger.status = charger.summary_status(self._is_charging(charger_id))
        self._save_charger(charger)
        if event_type == "Started" or transaction.event_count == 1:
            self._resolve_start_waiter(charger_id, transaction)
        return transaction

    def meter_values_outside_transaction(
        self, charger_id: str, readings: Iterable[MeterReading]
    ) -> None:
        for reading in readings:
            self.store.insert(
                tables.power_consumption,
                {
                    "charger_id": charger_id,
                    "transaction_id": None,
                    "timestamp": reading.timestamp,
                    "power_reading": reading.power_w,
                    "energy_register_wh": reading.energy_wh,
                    "soc": reading.soc,
                },
            )

    def open_transaction_ids(self, charger_id: str) -> list[str]:
        return sorted(self._open_by_charger.get(charger_id, {}))

    def find_transaction(self, charger_id: str, transaction_id: str) -> TransactionState | None:
        key = (charger_id, transaction_id)
        return self.transactions.get(key) or self._recently_closed.get(key)

    def new_transaction_id_16(self) -> str:
        return str(next(self._transaction_ids_16))

    # -- what the CSMS asks chargers (HTTP API) ------------------------------------------

    async def remote_start(
        self,
        charger_id: str,
        evse_id: int,
        connector_id: int,
        id_token: str,
        wait_for_transaction: float = 5.0,
    ) -> dict[str, Any]:
        connection = self._live_connection(charger_id)
        remote_start_id = next(self._remote_start_ids)
        if connection.version_name == "1.6":
            action, payload = v16.remote_start_transaction(id_token, connector_id)
        else:
            action, payload = v201.request_start_transaction(
                remote_start_id, v201.id_token(id_token, "Central"), evse_id
            )
        waiter = asyncio.get_running_loop().create_future()
        self._start_waiters[(charger_id, id_token)] = waiter
        try:
            reply = await self._call(connection, action, payload)
            if reply.get("status") != "Accepted":
                raise RemoteCallFailed("rejected", f"{action} answered {reply.get('status')!r}")
            transaction_id = reply.get("transactionId")
            if transaction_id is None:
                try:
                    transaction_id = await asyncio.wait_for(
                        asyncio.shield(waiter), wait_for_transaction
                    )
                except TimeoutError:
                    transaction_id = None
        finally:
            if self._start_waiters.get((charger_id, id_token)) is waiter:
                del self._start_waiters[(charger_id, id_token)]
        return {
            "status": "success",
            "charger_id": charger_id,
            "remote_start_id": remote_start_id,
            "transaction_id": transaction_id,
        }

    async def remote_stop(self, charger_id: str, transaction_id: str) -> dict[str, Any]:
        connection = self._live_connection(charger_id)
        transaction = self.transactions.get((charger_id, transaction_id))
        if transaction is None:
            raise RemoteCallFailed(
                "unknown_transaction", f"no open transaction {transaction_id!r} on {charger_id!r}"
            )
        if connection.version_name == "1.6":
            action, payload = v16.remote_stop_transaction(int(transaction_id))
        else:
            action, payload = v201.request_stop_transaction(transaction_id)
        reply = await self._call(connection, action, payload)
        if reply.get("status") != "Accepted":
            raise RemoteCallFailed("rejected", f"{action} answered {reply.get('status')!r}")
        return {"status": "success", "charger_id": charger_id, "transaction_id": transaction_id}

    async def remote_call(
        self, charger_id: str, action: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Send any CSMS-initiated CALL the charger's OCPP version defines; its CALLRESULT."""
        connection = self._live_connection(charger_id)
        version = connection.version
        if action in connection.handlers:
            raise RemoteCallFailed(
                "unknown_action", f"{action} is sent by a charger, not by a CSMS"
            )
        try:
            schemas.validate(version, action, payload)
        except schemas.UnknownAction:
            raise RemoteCallFailed(
                "unknown_action", f"OCPP {version.name} has no action {action[:64]!r}"
            ) from None
        except schemas.PayloadError as exc:
            raise RemoteCallFailed("invalid_request", exc.description) from None
        reply = await self._call(connection, action, payload)
        return {"status": "success", "charger_id": charger_id, "action": action, "reply": reply}

    # -- statistics ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        open_transactions = list(self.transactions.values())
        return {
            "chargers_known": sum(1 for c in self.chargers.values() if c.known),
            "chargers_connected": len(self.connections),
            "chargers_charging": len({t.charger_id for t in open_transactions}),
            "transactions_open": len(open_transactions),
            "transactions_closed": self.closed_transactions,
            "energy_kwh": round(
                self.closed_energy_kwh + sum(t.energy_consumed for t in open_transactions), 3
            ),
            "cost": round(self.closed_cost + sum(t.cost for t in open_transactions), 2),
            "power_w": round(self.current_power_w, 1),
            "peak_power_w": round(self.peak_power_w, 1),
            "tariff_per_kwh": self.tariff,
        }

    # -- internals -----------------------------------------------------------------------

    def _charger(self, charger_id: str) -> ChargerState:
        charger = self.chargers.get(charger_id)
        if charger is None:
            charger = ChargerState(charger_id)
            self.chargers[charger_id] = charger
        return charger

    def _save_charger(self, charger: ChargerState) -> None:
        charger.updated_at = utcnow()
        if charger.known or charger.connected:
            self.store.upsert(tables.charger_info, charger.row())

    def _add_open(self, transaction: TransactionState) -> None:
        self.transactions[(transaction.charger_id, transaction.transaction_id)] = transaction
        self._open_by_charger.setdefault(transaction.charger_id, {})[transaction.transaction_id] = (
            transaction
        )

    def _is_charging(self, charger_id: str) -> bool:
        return any(
            t.power_w > 0 or t.charging_state == "Charging"
            for t in self._open_by_charger.get(charger_id, {}).values()
        )

    def _set_power(self, transaction: TransactionState, power_w: float) -> None:
        if not math.isfinite(power_w):
            return
        self.current_power_w += power_w - transaction.power_w
        transaction.power_w = power_w
        self.peak_power_w = max(self.peak_power_w, self.current_power_w)

    def _resolve_start_waiter(self, charger_id: str, transaction: TransactionState) -> None:
        waiter = self._start_waiters.get((charger_id, transaction.id_token or ""))
        if waiter is not None and not waiter.done():
            waiter.set_result(transaction.transaction_id)

    def _live_connection(self, charger_id: str) -> Connection:
        charger = self.chargers.get(charger_id)
        if (charger is None or not charger.known) and charger_id not in self.connections:
            raise RemoteCallFailed("unknown_charger", f"no charger {charger_id!r}")
        connection = self.connections.get(charger_id)
        if connection is None:
            raise RemoteCallFailed("charger_offline", f"charger {charger_id!r} is not connected")
        return connection

    async def _call(
        self, connection: Connection, action: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        self.log_event(connection.charger_id, "call", action, payload)
        return await connection.call(action, payload, self.call_timeout)


def readings_from_meter_values(meter_values: Iterable[dict[str, Any]]) -> list[MeterReading]:
    """Energy register (Wh), power (W) and SoC from OCPP meterValue objects (1.6 or 2.0.1).

    A sampledValue without a measurand is the energy register (both specs' default). Values
    with a phase are summed when no phase-less total is given; kWh / kW and 2.0.1's
    ``unitOfMeasure.multiplier`` are converted.
    """
    readings = []
    for meter_value in meter_values:
        totals: dict[str, float] = {}
        phases: dict[str, float] = {}
        for sample in meter_value.get("sampledValue", ()):
            measurand = sample.get("measurand", "Energy.Active.Import.Register")
            try:
                value = float(sample["value"])
            except (KeyError, TypeError, ValueError):
                continue
            if not math.isfinite(value):
                continue
            unit_of_measure = sample.get("unitOfMeasure") or {}
            unit = unit_of_measure.get("unit") or sample.get("unit") or ""
            try:
                # A float power: an int one with a hostile multiplier would take forever.
                value *= 10.0 ** int(unit_of_measure.get("multiplier", 0) or 0)
            except OverflowError:
                value = math.inf
            if unit in ("kWh", "kW"):
                value *= 1000
            if not abs(value) <= MAX_READING:
                raise Unstorable(
                    f"{measurand} {sample['value']!r} is beyond what this CSMS stores "
                    f"({MAX_READING:g} Wh or W)"
                )
            target = phases if sample.get("phase") else totals
            target[measurand] = target.get(measurand, 0.0) + value
        values = {**phases, **totals}
        readings.append(
            MeterReading(
                timestamp=storable_timestamp(meter_value["timestamp"]),
                energy_wh=values.get("Energy.Active.Import.Register"),
                power_w=values.get("Power.Active.Import"),
                soc=values.get("SoC"),
            )
        )
    return readings
