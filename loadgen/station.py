"""One charging station as a pure state machine (no sockets, no sleeping).

The runtime (``loadgen.runner`` on gevent, or a test on a :class:`~loadgen.physics.FakeClock`)
drives it:

- ``on_connected()`` / ``on_disconnected()`` when the link opens or drops;
- ``next_call()`` hands out the next CALL to send, honouring OCPP's one outstanding CALL per
  direction, the boot handshake and the paced replay of the offline queue; the runtime
  reports how it went with ``on_call_result()`` or ``on_call_failed()``;
- ``handle_csms_call()`` answers what the CSMS asks;
- ``tick()`` fires whatever timers are due (heartbeats, meter values, boot retries);
  ``next_deadline()`` says when to call it next;
- the charging profile uses ``start_session()`` / ``stop_session()``.

Timestamps on the wire come from a separate wall clock (``wall_clock``, real time at run
time): ``--time-scale`` compresses the waits between events, never the time the CSMS reads.

The CSMS's verdicts on idTokens are honoured: a rejected Authorize starts no transaction; a
TransactionEvent / StartTransaction answered with a non-Accepted idTokenInfo / idTagInfo ends
the transaction as DeAuthorized; a 1.6 transactionId the CSMS did not assign (0 or less) is
never used. Each verdict is an ``authorization`` event for the listener.

Transaction messages survive disconnects: they are queued (2.0.1 with ``offline=true``),
replayed in order after the next accepted boot, and retried after a timeout or a drop (the
CSMS recognises a repeat by its seqNo). Everything else is dropped when the link drops.

What differs between the OCPP versions (the messages of a boot, a status, an Authorize and a
transaction, the connector statuses, 2.1's running cost and limits) and the CSMS calls each
version answers are in that version's module of :mod:`loadgen.stations`
(``self.rules``); this core has no version of its own.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadgen import (
    backoff,
    commands,
    device_model,
    protocols,
    seqnos,
    smart_charging_station,
    stations,
)
from loadgen.fleet import Charger
from loadgen.ocppj import CallErrorReply, ErrorCode
from loadgen.physics import EV, ChargingPhysics, Clock, EnergyRegister
from loadgen.protocols import Version
from loadgen.smart_charging import SmartCharging
from loadgen.stations.base import ACCEPTED, verdict
from loadgen.stations.base import NO_TRANSACTION_ID as NO_TRANSACTION_ID
from loadgen.tariffs import Tariff, Tariffs

#: what a station answers when the CSMS asks for something it does not do
NOT_IMPLEMENTED = ErrorCode.NOT_IMPLEMENTED


@dataclass
class OutgoingCall:
    """A CALL waiting to be sent. ``build`` runs at send time (1.6 needs the CSMS's
    transaction id, known only once StartTransaction was answered); it returns None when
    the call has become pointless."""

    action: str
    build: Callable[[], dict[str, Any] | None]
    transactional: bool = False
    on_result: Callable[[dict[str, Any]], None] | None = None
    on_error: Callable[[str], None] | None = None
    offline: bool = False
    attempts: int = 0
    payload: dict[str, Any] | None = None  # what was sent, once sent
    transaction: Transaction | None = None  # whose message it is (transactional calls)


@dataclass
class Transaction:
    """A charging session on one EVSE, as the station knows it."""

    local_id: str  # 2.0.1: the transactionId; 1.6: a placeholder until the CSMS assigns one
    evse_id: int
    connector_id: int
    token: str
    started_at: float  # simulated time (physics)
    start_wh: float
    remote_start_id: int | None = None
    #: 2.0.1 IdTokenEnumType of ``token`` (1.6 sends none)
    token_type: str = "ISO14443"
    csms_id: int | None = None  # 1.6 only
    seq_no: itertools.count = field(default_factory=itertools.count)
    next_meter_at: float = 0.0
    charging_state: str = "Charging"
    stopping: bool = False
    ended_at: float | None = None
    stop_wh: float | None = None
    #: the wall-clock times the CSMS was told (the run ledger records these)
    started_stamp: float | None = None
    ended_stamp: float | None = None
    #: the CSMS's non-Accepted verdict on the token, when it gave one
    rejected: str | None = None
    stop_reason: str | None = None
    messages: int = 0
    offline_messages: int = 0
    #: transaction messages the CSMS answered with a CALLRESULT: what it must have stored
    acknowledged: int = 0
    #: 2.0.1: the seqNos of those messages, as ranges (1.6 has no seqNo)
    acknowledged_seq_nos: seqnos.Ranges = field(default_factory=list)
    #: the running cost the CSMS last sent (CostUpdated)
    cost: float | None = None
    #: the reservation this transaction used (ReserveNow)
    reservation_id: int | None = None
    #: 2.1: the tariff pricing this transaction (its running cost), if the CSMS gave one
    tariff: Tariff | None = None
    #: 2.1: the CSMS's TransactionLimitType (maxEnergy, maxTime, maxCost, maxSoC)
    limit: dict[str, Any] | None = None
    #: 2.1: when a limit may next be reached (station clock), to look again then
    limit_due: float | None = None

    def acknowledge(self, payload: dict[str, Any] | None) -> None:
        self.acknowledged += 1
        seq_no = payload.get("seqNo") if payload else None
        if seq_no is not None:
            seqnos.add(self.acknowledged_seq_nos, seq_no)

    @property
    def transaction_id(self) -> str:
        """The id the CSMS knows this transaction by."""
        return str(self.csms_id) if self.csms_id is not None else self.local_id

    @property
    def energy_wh(self) -> float:
        return (self.stop_wh if self.stop_wh is not None else self.start_wh) - self.start_wh


@dataclass
class Evse:
    id: int
    register: EnergyRegister
    connectors: dict[int, str]  # connector id -> status
    operative: bool = True
    physics: ChargingPhysics | None = None
    transaction: Transaction | None = None
    #: plugged in, waiting for the CSMS's verdict on Authorize: no transaction yet
    authorizing: Transaction | None = None


@dataclass
class StationConfig:
    heartbeat_interval: float | None = None  # None: what the CSMS returns at boot
    meter_interval: float = 60.0  # TxUpdatedInterval / MeterValueSampleInterval
    boot_retry_interval: float = 30.0  # when a boot fails without an interval
    offline_replay_rate: float = 20.0  # queued transaction messages replayed per second
    max_attempts: int = 3  # CALLERRORs before a transaction message is given up
    initial_register_wh: float = 0.0
    #: the reconnect back-off the runtime follows; the CSMS may change it (SetVariables)
    retry_backoff: backoff.RetryBackOff = field(default_factory=backoff.RetryBackOff)
    #: real seconds a reset or firmware installation keeps the station away (the runtime
    #: jitters it by +-25 %)
    reboot_delay: float = 8.0
    #: reportData / monitors / messages per NotifyReport (and the other multi-part reports)
    report_items_per_message: int = 20
    #: how a 2.x station reports connector status: "StatusNotification" or "NotifyEvent"
    #: (the Connector's AvailabilityState); None: the version's way (2.1 NotifyEvent, 2.0.1
    #: StatusNotification). 1.6 always sends StatusNotification.
    connector_status: str | None = None


#: StationConfig.connector_status's values: how a 2.x station reports connector status
CONNECTOR_STATUS_MESSAGES = ("StatusNotification", "NotifyEvent")

Listener = Callable[[str, dict[str, Any]], None]


class Station:
    def __init__(
        self,
        charger: Charger,
        version: Version,
        clock: Clock,
        config: StationConfig | None = None,
        *,
        new_transaction_id: Callable[[], str] | None = None,
        listener: Listener | None = None,
        wall_clock: Clock | None = None,
    ) -> None:
        """``clock`` paces the station (simulated time); ``wall_clock`` gives the
        timestamps it sends: by default the clock's own ``wall`` (a
        :class:`~loadgen.physics.ScaledClock`'s is real time), else ``clock`` itself."""
        self.charger = charger
        self.use_version(version)
        self.clock = clock
        self.wall_clock: Clock = wall_clock or getattr(clock, "wall", None) or clock
        self.config = config or StationConfig()
        self.listener = listener
        self._new_transaction_id = new_transaction_id or (lambda: uuid.uuid4().hex)
        self.evses = {
            evse_id: Evse(
                evse_id,
                EnergyRegister(self.config.initial_register_wh),
                {c: "Available" for c in range(1, charger.connectors_per_evse + 1)},
            )
            for evse_id in range(1, charger.evse_count + 1)
        }
        self.online = False
        self.boot_status: str | None = None  # None until a boot was answered
        self.boot_reason = "PowerUp"
        #: the eventId of the station's last NotifyEvent event (they are unique per station)
        self.last_event_id = 0
        self.heartbeat_interval = self.config.heartbeat_interval or 0.0
        self.meter_interval = self.config.meter_interval
        self.retry_backoff = self.config.retry_backoff
        self.reset_requested: str | None = None  # the runtime reconnects and boots again
        self.completed: list[Transaction] = []
        self._queue: deque[OutgoingCall] = deque()
        self._in_flight: OutgoingCall | None = None
        self._boot_due: float | None = None
        self._boot_queued = False
        self._next_heartbeat: float | None = None
        self._next_replay: float = 0.0
        self._configuration: dict[str, str] = {}
        #: a station-wide Reset OnIdle waits for the running transactions to end
        self.reset_pending = False
        #: (due, order, action): what the CSMS's commands scheduled (a firmware download)
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        #: sent after the next accepted boot (FirmwareStatusNotification Installed)
        self._after_boot: list[OutgoingCall] | None = None
        # Made on first use: a device model is ~16 KB, and most stations are never asked.
        self._commands: commands.CommandState | None = None
        self._device_model: device_model.DeviceModel | None = None
        # the charging profiles, made when the CSMS first asks (~400 bytes a station saved)
        self._smart_charging: SmartCharging | None = None
        self._limits_due: float | None = None  # when a schedule period next begins or ends
        self._tariffs: Tariffs | None = None  # 2.1's default tariffs, made when first set
        #: the load test is stopping (:meth:`wind_down`): nothing periodic, no new sessions
        self.winding_down = False

    def use_version(self, version: Version) -> None:
        """Speak ``version`` from now on (the one the CSMS chose of the station's offer): its
        builders (:func:`loadgen.protocols.module_for`) and its rules
        (:func:`loadgen.stations.rules_for`)."""
        self.version = version
        #: the version's message builders
        self.messages = protocols.module_for(version)
        #: what the version does differently, and the CSMS calls it answers
        self.rules = stations.rules_for(version)
        if getattr(self, "_device_model", None) is not None:
            self._device_model = None  # rebuilt in the new version's terms on first use

    @property
    def commands(self) -> commands.CommandState:
        """What the station keeps for the CSMS's commands (reservations, local list, ...)."""
        if self._commands is None:
            self._commands = commands.CommandState()
        return self._commands

    @property
    def tariffs(self) -> Tariffs:
        """2.1: the default tariffs the CSMS set (SetDefaultTariff)."""
        if self._tariffs is None:
            self._tariffs = Tariffs()
        return self._tariffs

    @property
    def default_tariffs(self) -> Tariffs | None:
        """2.1: the default tariffs, None while the CSMS set none (none made to find out)."""
        return self._tariffs

    @property
    def device_model(self) -> device_model.DeviceModel:
        """The components and variables a CSMS reads and sets (one model for all)."""
        if self._device_model is None:
            self._device_model = device_model.build(self)
        return self._device_model

    # -- runtime: connection -------------------------------------------------------------

    def on_connected(self) -> None:
        self.online = True
        self.boot_status = None
        self._boot_due = self.clock.now()
        self._next_heartbeat = None
        self._next_replay = self.clock.now()

    def on_disconnected(self) -> None:
        """Keep transaction messages (to replay), forget the rest."""
        self.online = False
        self.boot_status = None
        self._boot_due = None
        self._boot_queued = False
        self._next_heartbeat = None
        self._queue = deque(call for call in self._queue if call.transactional)
        # Their Authorize is lost with the link: no verdict, no transaction.
        for evse in self.evses.values():
            if evse.authorizing is not None:
                self._authorize_failed(evse, evse.authorizing, "disconnected")

    @property
    def accepted(self) -> bool:
        return self.boot_status == "Accepted"

    def wind_down(self) -> None:
        """The load test is stopping: no more heartbeats or periodic meter values and no new
        sessions, so what the CSMS answers from now on is only what ending the running
        transactions sends, and the final summary can count everything it answered."""
        self.winding_down = True
        self._next_heartbeat = None
        self._queue = deque(call for call in self._queue if call.action != "Heartbeat")

    @property
    def offline(self) -> bool:
        """What a transaction message queued now says: the CSMS cannot hear it yet."""
        return not (self.online and self.accepted)

    @property
    def settled(self) -> bool:
        """Nothing queued and nothing on the wire: the CSMS has acknowledged everything."""
        return not self._queue and self._in_flight is None

    @property
    def queue_depth(self) -> int:
        """Transaction messages waiting to be sent (the offline queue)."""
        return sum(1 for call in self._queue if call.transactional)

    # -- runtime: outgoing CALLs ---------------------------------------------------------

    def next_call(self) -> OutgoingCall | None:
        """The next CALL to send now, or None. At most one is in flight."""
        if not self.online or self._in_flight is not None:
            return None
        now = self.clock.now()
        if not self.accepted:
            # Before an accepted boot only BootNotification goes out (B01/B02).
            if self._boot_due is not None and now >= self._boot_due and not self._boot_queued:
                return self._send(self._boot_call())
            return None
        while self._queue:
            call = self._queue[0]
            if call.offline and call.attempts == 0:
                # The offline queue is replayed at a set rate, not at once: thousands of
                # stations reconnecting together would otherwise flood the CSMS. A retry
                # (attempts > 0) is not paced again: it had its turn.
                if now < self._next_replay:
                    return None  # in order: nothing overtakes the head of the queue
                self._next_replay = now + 1.0 / self.config.offline_replay_rate
            self._queue.popleft()
            sent = self._send(call)
            if sent is not None:
                return sent
            # built to nothing (a 1.6 message whose transaction never got an id): next
        return None

    def _send(self, call: OutgoingCall) -> OutgoingCall | None:
        if call.payload is None:
            # Built once, at the first send: a retry resends the very same payload (same
            # seqNo, same timestamps), which is how the CSMS recognises a repeat.
            call.payload = call.build()
            if call.payload is None:
                return None
        call.attempts += 1
        self._in_flight = call
        self.emit("sent", {"action": call.action, "payload": call.payload})
        return call

    def on_call_result(self, call: OutgoingCall, payload: dict[str, Any]) -> None:
        self._in_flight = None
        if call.transaction is not None:  # first: on_result may put it in the run ledger
            call.transaction.acknowledge(call.payload)
        if call.on_result is not None:
            call.on_result(payload)

    def on_call_failed(self, call: OutgoingCall, kind: str, error_code: str | None = None) -> None:
        """``kind``: "error" (a CALLERROR), "timeout" or "disconnected"."""
        self._in_flight = None
        if call.action == "BootNotification":
            self._boot_queued = False
            self._boot_due = self.clock.now() + self.config.boot_retry_interval
            return
        if not call.transactional:
            if call.on_error is not None:
                call.on_error(error_code or kind)
            return
        # A transaction message is never lost to a drop or a timeout (the CSMS may have
        # stored it; the repeat is harmless); only a CSMS that keeps refusing it (CALLERROR,
        # max_attempts times) makes the station give it up, or the queue would stall.
        if kind == "error" and call.attempts >= self.config.max_attempts:
            self.emit(
                "dropped",
                {"action": call.action, "payload": call.payload, "error_code": error_code},
            )
            return
        self._queue.appendleft(call)  # same payload, same seqNo: the CSMS deduplicates

    def next_deadline(self) -> float | None:
        """When :meth:`tick` or :meth:`next_call` next has something to do."""
        deadlines = []
        if self.online and not self.accepted and self._boot_due is not None:
            deadlines.append(self._boot_due)
        if self._next_heartbeat is not None:
            deadlines.append(self._next_heartbeat)
        for evse in self.evses.values():
            if evse.transaction is not None and not evse.transaction.stopping:
                if not self.winding_down:
                    deadlines.append(evse.transaction.next_meter_at)
                if evse.transaction.limit_due is not None:
                    deadlines.append(evse.transaction.limit_due)
        if self.online and self.accepted and self._queue and self._queue[0].offline:
            deadlines.append(self._next_replay)
        if self._timers:
            deadlines.append(self._timers[0][0])
        if self._limits_due is not None:
            deadlines.append(self._limits_due)
        return min(deadlines) if deadlines else None

    def tick(self) -> None:
        now = self.clock.now()
        while self._timers and self._timers[0][0] <= now:
            heapq.heappop(self._timers)[2]()
        if self._limits_due is not None and now >= self._limits_due:
            self.apply_charging_limits(since=self._limits_due)
        if self.winding_down:
            self._next_heartbeat = None  # a boot answered meanwhile set one
        if self.accepted and self._next_heartbeat is not None and now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_interval
            if not any(call.action == "Heartbeat" for call in self._queue):
                self._queue.append(OutgoingCall("Heartbeat", lambda: {}))
        for evse in self.evses.values():
            transaction = evse.transaction
            if (
                transaction is not None
                and not transaction.stopping
                and not self.winding_down
                and (now >= transaction.next_meter_at)
            ):
                transaction.next_meter_at = next_period(
                    transaction.next_meter_at, self.meter_interval, now
                )
                self.meter_update(evse, "MeterValuePeriodic")
            transaction = evse.transaction
            if (
                transaction is not None
                and transaction.limit_due is not None
                and now >= transaction.limit_due
            ):
                self.rules.check_limits(self, evse)

    # -- boot ----------------------------------------------------------------------------

    def _boot_call(self) -> OutgoingCall:
        self._boot_queued = True
        payload = self.rules.boot_notification(self)
        return OutgoingCall("BootNotification", lambda: payload, on_result=self._booted)

    def _booted(self, reply: dict[str, Any]) -> None:
        # Read the whole reply before changing any state: a broken one raises here and the
        # runner fails the CALL (the boot is retried) with the station as it was.
        status = reply["status"]
        interval = seconds_or_zero(reply.get("interval"))
        self._boot_queued = False
        now = self.clock.now()
        self.boot_status = status
        self.emit("boot", {"status": self.boot_status, "interval": interval})
        if self.boot_status != "Accepted":
            # Pending or Rejected: try again after the interval the CSMS gave.
            self._boot_due = now + (interval or self.config.boot_retry_interval)
            return
        self.boot_reason = "PowerUp"
        self.heartbeat_interval = self.config.heartbeat_interval or interval or 60.0
        self._next_heartbeat = now + self.heartbeat_interval
        # After a boot a station reports every connector (and 1.6's connector 0).
        status_calls = [
            self._status_call(evse_id, connector_id, status)
            for evse_id, connector_id, status in self.rules.boot_statuses(self)
        ]
        # Before the replayed transaction messages, which may have been waiting a while.
        self._queue.extendleft(reversed(status_calls + (self._after_boot or [])))
        self._after_boot = None

    # -- status --------------------------------------------------------------------------

    def _status_call(
        self, evse_id: int, connector_id: int, status: str, *, requested: bool = False
    ) -> OutgoingCall:
        """The report of a connector's status: the version's message (StatusNotification,
        or NotifyEvent), or a StatusNotification when the CSMS asked for one (``requested``,
        TriggerMessage)."""
        timestamp = self.wall_clock.now()
        if requested:
            action = "StatusNotification"
            payload = self.rules.status_notification(self, evse_id, connector_id, status, timestamp)
        else:
            action, payload = self.rules.connector_status(
                self, evse_id, connector_id, status, timestamp
            )
        return OutgoingCall(action, lambda: payload)

    def _set_status(self, evse: Evse, status: str, connector_id: int = 1) -> None:
        if evse.connectors.get(connector_id) == status:
            return
        evse.connectors[connector_id] = status
        self.emit("status", {"evse_id": evse.id, "connector_id": connector_id, "status": status})
        if self.online and self.accepted:
            self._queue.append(self._status_call(evse.id, connector_id, status))

    # -- sessions (driven by the charging profile) ---------------------------------------

    def free_evse(self) -> Evse | None:
        if self.rebooting:
            return None
        for evse in self.evses.values():
            if (
                evse.operative
                and evse.transaction is None
                and evse.authorizing is None
                and all(status == "Available" for status in evse.connectors.values())
            ):
                return evse
        return None

    def start_session(
        self,
        evse_id: int,
        token: str,
        ev: EV | None = None,
        *,
        remote_start_id: int | None = None,
        authorize: bool = False,
        token_type: str | None = None,
    ) -> Transaction | None:
        """Plug in an EV on ``evse_id`` and start a transaction for ``token`` (2.0.1: of
        ``token_type``, ISO14443 if None).

        With ``authorize`` the station first asks the CSMS (Authorize) and starts the
        transaction only if it answers Accepted: until then the returned transaction is
        pending (``evse.authorizing``); rejected, it never starts (``rejected`` says why).
        """
        limit = self.messages.ID_TOKEN_MAX_LENGTH
        if not token or len(token) > limit:
            raise ValueError(f"id token {token!r} must be 1 to {limit} characters")
        evse = self.evses[evse_id]
        if (
            evse.transaction is not None
            or evse.authorizing is not None
            or not evse.operative
            or self.rebooting
            or self.winding_down
        ):
            return None
        reservation_id = None
        if self._commands is not None and self._commands.reservations:
            allowed, reservation_id = commands.use_reservation(self, evse_id, token)
            if not allowed:
                return None  # reserved for another idToken
        now = self.clock.now()
        transaction = Transaction(
            local_id=self._new_transaction_id(),
            evse_id=evse_id,
            connector_id=1,
            token=token,
            started_at=now,
            start_wh=evse.register.wh,
            remote_start_id=remote_start_id,
            token_type=token_type or "ISO14443",
            reservation_id=reservation_id,
        )
        self._set_status(evse, self.rules.plugged_status)
        if authorize:
            evse.authorizing = transaction
            self._queue.append(self._authorize_call(evse, transaction, ev or EV()))
        else:
            self._begin(evse, transaction, ev or EV())
        return transaction

    def _begin(self, evse: Evse, transaction: Transaction, ev: EV) -> None:
        """The transaction starts now: the EV draws power, the CSMS is told."""
        # Start time and energy are taken now, not at plug-in: after an Authorize the
        # transaction begins when the CSMS said yes, and the register may have moved.
        now = self.clock.now()
        transaction.started_at = now
        transaction.start_wh = evse.register.wh
        transaction.next_meter_at = now + self.meter_interval
        transaction.started_stamp = self.wall_clock.now()  # what the CSMS is told
        evse.transaction = transaction
        evse.physics = ChargingPhysics(ev, evse.register, self.charger.rated_power_w, now)
        self.apply_charging_limits(report=False)  # a TxDefaultProfile applies from the start
        # Queued even offline: the start is replayed after the next boot (offline=true).
        self.rules.queue_start(self, evse, transaction, self._readings(evse))
        charging = self.rules.charging_status(True)
        if charging is not None:
            self._set_status(evse, charging)
        self.emit("started", {"transaction": transaction})

    def stop_session(
        self, evse_id: int, reason: str = "Local", trigger: str = "StopAuthorized"
    ) -> Transaction | None:
        """End the transaction on ``evse_id`` (reason: 2.0.1 stoppedReason / 1.6 reason)
        and unplug."""
        evse = self.evses[evse_id]
        if evse.authorizing is not None:  # the driver left before the CSMS's verdict
            evse.authorizing = None
            self.set_idle_status(evse)
            return None
        transaction = evse.transaction
        if transaction is None or transaction.stopping:
            return None
        # stopping, not yet gone: a CSMS answer arriving meanwhile (a verdict, a limit)
        # must not end it twice
        transaction.stopping = True
        now = self.clock.now()
        assert evse.physics is not None
        evse.physics.advance(now)  # the energy up to this moment, for the end reading
        transaction.ended_at = now
        transaction.ended_stamp = self.wall_clock.now()
        transaction.stop_wh = evse.register.wh
        transaction.stop_reason = reason
        # Queued before the EVSE forgets it: the end message reads the register and the EV.
        # It is queued even offline: the CSMS must hear of every transaction's end.
        self.rules.queue_end(self, evse, transaction, trigger)
        evse.transaction = None
        evse.physics = None
        if self.rules.finishing_status is not None:
            self._set_status(evse, self.rules.finishing_status)
        # Unavailable when a ChangeAvailability(Inoperative) was Scheduled for its end.
        self.set_idle_status(evse)
        self.completed.append(transaction)
        self.emit("stopped", {"transaction": transaction})
        if self.reset_pending and not self.transactions:
            self.reboot("RemoteReset")  # the Reset OnIdle answered Scheduled
        return transaction

    def transaction_by_id(self, transaction_id: str) -> Transaction | None:
        for evse in self.evses.values():
            transaction = evse.transaction
            if transaction is not None and transaction.transaction_id == transaction_id:
                return transaction
        return None

    @property
    def transactions(self) -> list[Transaction]:
        return [evse.transaction for evse in self.evses.values() if evse.transaction]

    def _authorize_call(self, evse: Evse, transaction: Transaction, ev: EV) -> OutgoingCall:
        payload = self.rules.authorize(self, transaction)

        def authorized(reply: dict[str, Any]) -> None:
            status = verdict(reply, self.rules.verdict_field)
            if evse.authorizing is not transaction:
                return  # given up meanwhile (the driver left, the link dropped)
            evse.authorizing = None
            self.report_authorization("Authorize", transaction, status)
            if status == ACCEPTED:
                self.rules.authorized(transaction, reply)
                self._begin(evse, transaction, ev)
                return
            transaction.rejected = status
            self.set_idle_status(evse)
            self.emit("rejected", {"transaction": transaction, "status": status})

        def failed(error: str) -> None:
            self._authorize_failed(evse, transaction, error)

        return OutgoingCall("Authorize", lambda: payload, on_result=authorized, on_error=failed)

    def _authorize_failed(self, evse: Evse, transaction: Transaction, error: str) -> None:
        """No verdict (CALLERROR, timeout, the link dropped): no transaction either; the
        failed CALL itself is counted by the runtime."""
        if evse.authorizing is not transaction:
            return
        evse.authorizing = None
        self.set_idle_status(evse)

    def report_authorization(self, message: str, transaction: Transaction, status: str) -> None:
        self.emit(
            "authorization", {"message": message, "status": status, "transaction": transaction}
        )

    def deauthorize(self, transaction: Transaction, status: str) -> None:
        """The CSMS rejected the token of a running transaction: end it (E05, StopTxOnInvalidId;
        1.6 StopTransactionOnInvalidId), unless it is ending already."""
        transaction.rejected = status
        evse = self.evses.get(transaction.evse_id)
        if evse is None or evse.transaction is not transaction or transaction.stopping:
            if self.rules.unknown_to_csms(transaction):
                # no end message will tell the listener: the rejection is all there is
                self.emit("rejected", {"transaction": transaction, "status": status})
            return
        self.stop_session(evse.id, "DeAuthorized", trigger="Deauthorized")
        self.emit("rejected", {"transaction": transaction, "status": status})

    def queue_transactional(
        self,
        action: str,
        transaction: Transaction,
        build: Callable[[], dict[str, Any] | None],
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Queue a transaction message: kept across disconnects and replayed in order, its
        ``build`` run when it is first sent."""
        offline = self.offline
        transaction.messages += 1
        transaction.offline_messages += int(offline)
        self._queue.append(
            OutgoingCall(
                action,
                build,
                transactional=True,
                on_result=on_result,
                offline=offline,
                transaction=transaction,
            )
        )

    def _readings(self, evse: Evse) -> stations.Readings:
        assert evse.physics is not None
        physics = evse.physics
        soc = round(physics.ev.soc * 100, 1)
        return evse.register.wh, physics.power_w, soc

    def readings_now(self, evse: Evse) -> stations.Readings:
        """The EVSE's meter now: register, power and the EV's SoC while a transaction
        runs; the register alone, at 0 W, when none does."""
        if evse.physics is None:
            return evse.register.wh, 0.0, None
        evse.physics.advance(self.clock.now())
        return self._readings(evse)

    def meter_update(self, evse: Evse, trigger: str) -> None:
        """Queue the running transaction's readings now (MeterValues / TransactionEvent
        Updated); a change of charging state is noted first, and named the trigger."""
        transaction = evse.transaction
        assert transaction is not None and evse.physics is not None
        evse.physics.advance(self.clock.now())
        readings = self._readings(evse)
        power = readings[1]
        state = "Charging" if power > 0 else "SuspendedEV"
        if power <= 0 < evse.physics.ev.acceptance_w():
            state = "SuspendedEVSE"  # a charging profile's limit of 0
        if state != transaction.charging_state:
            transaction.charging_state = state
            trigger = "ChargingStateChanged"
            status = self.rules.charging_status(power > 0)
            if status is not None:
                self._set_status(evse, status)
        energy, power, soc = readings
        self.emit(
            "meter", {"transaction": transaction, "energy_wh": energy, "power_w": power, "soc": soc}
        )
        self.rules.queue_update(self, evse, transaction, trigger, readings)

    def end_acknowledged(self, transaction: Transaction) -> Callable[[dict[str, Any]], None]:
        """What reads the CSMS's answer to a transaction's last message."""

        def acknowledged(reply: dict[str, Any]) -> None:
            # The CSMS has the whole transaction: the moment to put it in a run ledger.
            self.emit("acknowledged", {"transaction": transaction, "reply": reply})

        return acknowledged

    # -- what the CSMS asks --------------------------------------------------------------

    def handle_csms_call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Answer a CSMS-initiated CALL; raises :class:`CallErrorReply` for a CALLERROR."""
        handler = self.rules.handlers.get(action)
        if handler is None:
            raise CallErrorReply(NOT_IMPLEMENTED, f"{action} is not implemented")
        self.emit("csms_call", {"action": action, "payload": payload})
        return handler(self, payload)

    def remote_start(
        self,
        token: str,
        evse_id: int | None,
        remote_start_id: int | None,
        token_type: str | None = None,
    ) -> Transaction | None:
        """RequestStartTransaction / RemoteStartTransaction on ``evse_id`` (None: the first
        free EVSE): the transaction started, or None when none could."""
        evse = self.evses.get(evse_id) if evse_id else self.free_evse()
        if (
            evse is None
            or evse.transaction is not None
            or evse.authorizing is not None
            or not evse.operative
        ):
            return None
        return self.start_session(
            evse.id, token, remote_start_id=remote_start_id, token_type=token_type
        )

    def reset(self, immediate: bool, stop_reason: str, evse_id: int | None = None) -> str:
        """Reset the station (or one EVSE). Immediate ends the transactions first, with
        ``stop_reason`` (2.0.1: ImmediateReset; 1.6: HardReset / SoftReset); OnIdle with
        transactions running answers Scheduled and reboots when the last one ends (B12); a
        reset EVSE only ends its transaction."""
        targets = [self.evses[evse_id]] if evse_id else list(self.evses.values())
        for evse in targets:
            if evse.authorizing is not None:  # no transaction yet: none to start after a reboot
                self.stop_session(evse.id)
        busy = [evse for evse in targets if evse.transaction is not None]
        if busy and not immediate:
            if evse_id is None:
                self.reset_pending = True  # no new transactions meanwhile
            return "Scheduled"
        for evse in busy:
            self.stop_session(
                evse.id,
                stop_reason,
                trigger="ResetCommand",
            )
        if evse_id is None and self.reset_requested is None:  # (the last stop may have)
            self.reboot("RemoteReset")
        return "Accepted"

    def reboot(self, reason: str) -> None:
        """Ask the runtime to drop the connection, stay away for the reboot delay and boot
        again with ``reason`` (2.0.1 BootReason: RemoteReset, FirmwareUpdate)."""
        self.reset_pending = False
        self.reset_requested = reason
        self.boot_reason = reason
        self.emit("reboot", {"reason": reason})

    @property
    def rebooting(self) -> bool:
        """A reset is on its way: no new transactions start."""
        return self.reset_pending or self.reset_requested is not None

    def set_idle_status(self, evse: Evse) -> None:
        """The status of an EVSE without a transaction: Unavailable when inoperative,
        Reserved when reserved, else Available."""
        if evse.transaction is not None:
            return
        if not evse.operative:
            status = "Unavailable"
        elif self._commands is not None and commands.reservation_on(self, evse.id) is not None:
            status = "Reserved"
        else:
            status = "Available"
        for connector_id in evse.connectors:
            self._set_status(evse, status, connector_id)

    def schedule(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` from :meth:`tick` once the clock reaches ``when``."""
        heapq.heappush(self._timers, (when, next(_TIMER_ORDER), action))

    def notify(self, action: str, payload: dict[str, Any]) -> None:
        """Queue a station-initiated message (a report, a status notification); like a
        heartbeat it is dropped if the link drops first."""
        self._queue.append(OutgoingCall(action, lambda: payload))

    def after_boot(self, action: str, payload: dict[str, Any]) -> None:
        """Queue ``action`` for right after the next accepted boot."""
        if self._after_boot is None:
            self._after_boot = []
        self._after_boot.append(OutgoingCall(action, lambda: payload))

    def messages_in_queue(self, transaction_id: str | None = None) -> bool:
        """Transaction messages not yet acknowledged (of ``transaction_id``, if given)."""
        calls = list(self._queue) + ([self._in_flight] if self._in_flight else [])
        return any(
            call.transactional
            and call.transaction is not None
            and (transaction_id is None or call.transaction.transaction_id == transaction_id)
            for call in calls
        )

    def change_availability(self, evse_id: int | None, operative: bool) -> str:
        if evse_id and evse_id not in self.evses:
            return "Rejected"  # not ours: nothing changes (it used to switch every EVSE)
        targets = [self.evses[evse_id]] if evse_id else list(self.evses.values())
        whole_before = self.rules.station_statuses(self)
        scheduled = False
        for evse in targets:
            evse.operative = operative
            if evse.transaction is not None:
                scheduled = True  # takes effect when the transaction ends
                continue
            self.set_idle_status(evse)
        # 1.6's connector 0 reports the charge point as a whole when that changes too.
        if self.online and self.accepted:
            for entry in self.rules.station_statuses(self):
                if entry not in whole_before:
                    self._queue.append(self._status_call(*entry))
        return "Scheduled" if scheduled else "Accepted"

    def trigger_message(self, message: str, evse_id: int | None) -> str:
        """TriggerMessage: queue ``message``; "NotImplemented" for one we cannot send,
        "Rejected" for an EVSE (1.6: connector) the station does not have."""
        per_evse = ("StatusNotification", "MeterValues", "TransactionEvent")
        if message in per_evse and evse_id and evse_id not in self.evses:
            return "Rejected"  # and nothing is sent (1.6 TC_055: NumberOfConnectors + 1)
        if message == "BootNotification":
            self._queue.append(self._boot_call())
        elif message == "Heartbeat":
            self._queue.append(OutgoingCall("Heartbeat", lambda: {}))
        elif message == "StatusNotification":
            if not evse_id:  # the whole station too (1.6: connector 0)
                for entry in self.rules.station_statuses(self):
                    self._queue.append(self._status_call(*entry))
            for evse in self.evses.values():
                if evse_id is None or evse.id == evse_id:
                    for connector_id, status in evse.connectors.items():
                        call = self._status_call(evse.id, connector_id, status, requested=True)
                        self._queue.append(call)
        elif message in ("MeterValues", "TransactionEvent"):
            for evse in self.evses.values():
                if evse_id is None or evse.id == evse_id:
                    self.rules.trigger_readings(self, evse, message)
        elif not self.rules.trigger(self, message):
            return "NotImplemented"
        return "Accepted"

    def variables(self) -> dict[tuple[str, str], str]:
        """The few device-model variables (2.0.1) / configuration keys (1.6) we expose."""
        return {
            ("OCPPCommCtrlr", "HeartbeatInterval"): str(int(self.heartbeat_interval)),
            ("SampledDataCtrlr", "TxUpdatedInterval"): str(int(self.meter_interval)),
            ("SecurityCtrlr", "Identity"): self.charger.id,
            ("EVSE", "Power"): str(int(self.charger.rated_power_w)),
            **{
                (backoff.COMPONENT, variable): f"{value:g}"
                for variable, value in self._backoff_variables().items()
            },
        }

    def _backoff_variables(self) -> dict[str, float]:
        b = self.retry_backoff
        return {
            backoff.WAIT_MINIMUM: b.wait_minimum,
            backoff.RANDOM_RANGE: b.random_range,
            backoff.REPEAT: b.repeat_times,
        }

    def set_variable(self, component: str, variable: str, value: str) -> str:
        # Both intervals are whole seconds; "1e-9", "nan", "inf" or "1e400" would make the
        # station send as fast as it can, or never, or fail on int() later: Rejected.
        try:
            number = float(int(value.strip()))
        except ValueError:
            number = -1.0
        if number > MAX_INTERVAL:
            number = -1.0
        if (component, variable) == ("OCPPCommCtrlr", "HeartbeatInterval"):
            if number <= 0:
                return "Rejected"
            self.heartbeat_interval = number
            if self._next_heartbeat is not None:
                self._next_heartbeat = self.clock.now() + number
            return "Accepted"
        if (component, variable) == ("SampledDataCtrlr", "TxUpdatedInterval"):
            if number <= 0:
                return "Rejected"
            self.meter_interval = number
            return "Accepted"
        if component == backoff.COMPONENT and variable in self._backoff_variables():
            return self._set_backoff(variable, number)
        if (component, variable) in self.variables():
            return "Rejected"  # read-only
        return "UnknownVariable"

    def _set_backoff(self, variable: str, number: float) -> str:
        """RetryBackOff*: whole seconds (times), zero allowed; the runtime reads them at the
        next disconnect."""
        if number < 0:
            return "Rejected"
        field_name = {
            backoff.WAIT_MINIMUM: "wait_minimum",
            backoff.RANDOM_RANGE: "random_range",
            backoff.REPEAT: "repeat_times",
        }[variable]
        value: float | int = int(number) if variable == backoff.REPEAT else number
        self.retry_backoff = dataclasses.replace(self.retry_backoff, **{field_name: value})
        return "Accepted"

    # -- smart charging (loadgen.smart_charging) -----------------------------------------

    @property
    def has_charging_profiles(self) -> bool:
        """The CSMS has sent charging profiles (none made to find out)."""
        return self._smart_charging is not None

    @property
    def smart_charging(self) -> SmartCharging:
        """The charging profiles the CSMS set (1.6 replaces one at the same stack level)."""
        if self._smart_charging is None:
            self._smart_charging = SmartCharging(
                self.evses, replace_same_stack_level=self.rules.replace_same_stack_level
            )
        return self._smart_charging

    def now_wall(self) -> float:
        """The CSMS's clock (real time), which charging profiles' and every CSMS dateTime
        are on."""
        return self.wall_clock.now()

    def queue_call(self, action: str, payload: dict[str, Any]) -> None:
        """Send a CALL of the station's own once the ones before it went out."""
        self._queue.append(OutgoingCall(action, lambda: payload))

    def apply_charging_limits(self, report: bool = True, since: float | None = None) -> None:
        """Make every charging EVSE draw at most the limit in force, from ``since`` (a
        schedule period's start) or now; 2.0.1 reports a change of power at once
        (ChargingRateChanged) unless ``report`` is False."""
        if self._smart_charging is None:
            return  # no profile ever: every EVSE at its rating, as ChargingPhysics starts
        now = self.clock.now()
        wall = self.now_wall()
        due: list[float] = []
        for evse in self.evses.values():
            transaction, physics = evse.transaction, evse.physics
            if transaction is None or physics is None or transaction.stopping:
                continue
            running = smart_charging_station.active_transaction(transaction)
            limit = self.smart_charging.limit_w(evse.id, wall, running)
            rated = self.charger.rated_power_w
            limit = rated if limit is None else min(limit, rated)
            if limit != physics.charger_limit_w:
                before = physics.power_w
                physics.set_limit(limit, min(now, since if since is not None else now))
                physics.advance(now)
                if report and self.rules.reports_rate_change and physics.power_w != before:
                    self.meter_update(evse, "ChargingRateChanged")
            following = self.smart_charging.next_change(evse.id, wall, running)
            if following is not None:
                # a period in the year 9999 is no timer to set: look again in a day
                due.append(self.clock_from_wall(min(following, wall + 86_400.0)))
        self._limits_due = min(due) if due else None

    def clock_from_wall(self, wall: float) -> float:
        """A moment on the CSMS's clock (:meth:`now_wall`) as one on the station's clock,
        which its timers (:meth:`next_deadline`) run on: under ``--time-scale`` the wait
        until a real moment is that many times longer on the station's clock."""
        from_wall = getattr(self.clock, "from_wall", None)
        if from_wall is not None:
            return from_wall(wall)
        return self.clock.now() + (wall - self.now_wall())  # a test's fake clocks

    def emit(self, kind: str, detail: dict[str, Any]) -> None:
        """Tell the listener (the runtime, the metrics) what happened."""
        if self.listener is not None:
            self.listener(kind, detail)


#: breaks ties between timers due at the same time: first scheduled, first run
_TIMER_ORDER = itertools.count()

#: the longest heartbeat / meter interval a CSMS can set (a week); longer is refused
MAX_INTERVAL = 7 * 24 * 3600.0


def next_period(due: float, interval: float, now: float) -> float:
    """The first time after ``now`` on the grid ``due + k * interval``: a periodic message
    keeps its cadence when it is sent late (a busy process, a slow tick), as a charger's
    sampling clock does, instead of drifting by each lateness; missed periods are skipped,
    not sent in a burst."""
    if interval <= 0:
        return now
    return due + interval * (math.floor((now - due) / interval) + 1)


def seconds_or_zero(value: Any) -> float:
    """A CSMS's interval in seconds, or 0 (use the default) when it is none, not positive
    or beyond :data:`MAX_INTERVAL`; raises ValueError when it is not a number at all."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"interval is not a number: {value!r}")
    if not 0 < value <= MAX_INTERVAL:  # also false for NaN
        return 0.0
    return float(value)
