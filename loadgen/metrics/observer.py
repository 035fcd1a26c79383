"""Feeding the collectors: :class:`MetricsObserver` is the link's
:class:`~loadgen.link.CallObserver` and listens to the station runners and the stations.

Per-charger state stays inside it; the series are per site at most (per-charger labels are
forbidden).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from loadgen import link as links
from loadgen.fleet import Site
from loadgen.metrics.collectors import Metrics
from loadgen.metrics.labels import (
    DISCONNECT_REASONS,
    MESSAGE_DIRECTIONS,
    MESSAGE_TYPES,
    OTHER,
    OUTCOMES,
    PROTOCOL_ERROR_KINDS,
    SITE_STATES,
    TRANSACTION_OUTCOMES,
    action_label,
    authorization_labels,
    connect_outcome_label,
    error_code_label,
    known_statuses,
    reconnect_reason,
    status_label,
    version_label,
)

#: fleets with up to this many sites export every site's series from the start
MAX_PRESET_SITES = 1000
_UNAVAILABLE = frozenset({"Unavailable", "Faulted", "Inoperative"})


def _coordinate(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


class _Charger:
    """What the observer remembers of one charger (never a label)."""

    __slots__ = (
        "active",
        "booted",
        "connected",
        "failed",
        "last_disconnect",
        "pending",
        "site",
        "state",
        "station",
        "unavailable",
        "version",
    )

    def __init__(self, site: str, station: Any) -> None:
        self.site = site
        self.station = station
        self.connected = False
        self.booted = False
        self.failed = False
        self.unavailable: set[tuple[int, int]] = set()
        #: the OCPP version of the connection it is counted under (None: not connected)
        self.version: str | None = None
        self.last_disconnect = "other"
        #: running transactions, by local id
        self.active: dict[str, _Transaction] = {}
        #: ended transactions waiting for the CSMS's acknowledgement, by local id
        self.pending: dict[str, Any] = {}
        self.state = "offline"

    def compute_state(self) -> str:
        if self.failed:
            return "failed"
        if not self.connected:
            return "offline"
        if not self.booted:
            return "booting"
        if self.active:
            return "charging"
        if self.unavailable:
            return "unavailable"
        return "available"


class _Transaction:
    __slots__ = ("last_wh", "power_w", "site")

    def __init__(self, site: str, start_wh: float) -> None:
        self.site = site
        self.last_wh = start_wh
        self.power_w = 0.0


class MetricsObserver:
    """Feeds :class:`Metrics` from the link, the station runners and the stations.

    The link's :class:`~loadgen.link.CallObserver` methods (``call_done``, ``message``,
    ``connect_done``, ``disconnected``, ``protocol_error``) are the hot path: label children
    are resolved once and cached, so a CALL costs two dict lookups and an observe.

    Per-charger events need the charger registered first with :meth:`add_station` (it
    gives the site) and forgotten with :meth:`remove_station`; events for chargers it does
    not know are ignored.
    """

    def __init__(self, metrics: Metrics, sites: Mapping[str, Site] | None = None) -> None:
        self.metrics = metrics
        self.sites = dict(sites or {})
        self._chargers: dict[str, _Charger] = {}
        self._connected = 0
        self._booted = 0
        self._peak = 0
        self._active = 0
        m = metrics
        # hot-path caches: raw value -> prometheus child
        self._durations: dict[str, dict[str, Any]] = {}
        self._errors: dict[tuple[str, str], Any] = {}
        self._messages = {
            direction: {kind: m.messages.labels(direction, kind) for kind in MESSAGE_TYPES}
            for direction in MESSAGE_DIRECTIONS
        }
        self._connects: dict[str, Any] = {}
        self._disconnects = {
            reason: m.disconnects.labels(reason) for reason in (*DISCONNECT_REASONS, "other")
        }
        self._site_states: dict[tuple[str, str], Any] = {}
        self._site_power: dict[str, list[Any]] = {}  # site -> [gauge child, running count]
        self._site_energy: dict[str, Any] = {}
        self._transactions_total = {
            outcome: m.transactions.labels(outcome) for outcome in TRANSACTION_OUTCOMES
        }
        self._csms_calls: dict[tuple[str, str], Any] = {}
        if len(self.sites) <= MAX_PRESET_SITES:
            # every site of the fleet on the map from the start, not once a charger is there
            for site in self.sites:
                self._site_state(site, "offline")
                self._site_power_entry(site)
                self._energy_child(site)
        self._station_handlers: dict[str, Callable[[_Charger, str, Mapping[str, Any]], None]] = {
            "boot": self._on_boot,
            "status": self._on_status,
            "started": self._on_started,
            "meter": self._on_meter,
            "stopped": self._on_stopped,
            "acknowledged": self._on_acknowledged,
            "dropped": self._on_dropped,
            "authorization": self._on_authorization,
            "rejected": self._on_rejected,
        }
        metrics.add_refresher(self.refresh)

    # -- the link's CallObserver (hot path) ----------------------------------------------

    def call_done(self, action: str, outcome: str, seconds: float, error_code: str | None) -> None:
        try:
            self._durations[action][outcome].observe(seconds)
        except KeyError:
            self._duration_child(action, outcome).observe(seconds)
        if error_code is not None:
            self._call_error(action, error_code)

    def message(self, direction: str, kind: str) -> None:
        try:  # noqa: SIM105 (contextlib.suppress costs more on this hot path)
            self._messages[direction][kind].inc()
        except KeyError:
            pass  # not a direction / type the link reports

    def connect_done(self, outcome: str, seconds: float) -> None:
        child = self._connects.get(outcome)
        if child is None:
            child = self.metrics.connect_duration.labels(connect_outcome_label(outcome))
            if len(self._connects) < 64:
                self._connects[outcome] = child
        child.observe(seconds)
        if outcome == "ok":
            self._connected += 1
            self.metrics.chargers_connected.set(self._connected)
            if self._connected > self._peak:
                self._peak = self._connected
                self.metrics.chargers_connected_peak.set(self._peak)

    def disconnected(self, reason: str) -> None:
        child = self._disconnects.get(reason) or self._disconnects["other"]
        child.inc()
        if self._connected > 0:
            self._connected -= 1
            self.metrics.chargers_connected.set(self._connected)

    def protocol_error(self, kind: str) -> None:
        self.metrics.protocol_errors.labels(kind if kind in PROTOCOL_ERROR_KINDS else "other").inc()

    def _duration_child(self, action: str, outcome: str) -> Any:
        label = action_label(action)
        children = {o: self.metrics.call_duration.labels(label, o) for o in OUTCOMES}
        if label != OTHER:
            self._durations[action] = children  # unknown actions are not cached: bounded
        return children.get(outcome, children[links.ERROR])

    def _call_error(self, action: str, error_code: str) -> None:
        key = (action, error_code)
        child = self._errors.get(key)
        if child is None:
            action_value, code = action_label(action), error_code_label(error_code)
            child = self.metrics.call_errors.labels(action_value, code)
            if action_value != OTHER and code != OTHER:
                self._errors[key] = child
        child.inc()

    # -- CSMS-initiated CALLs ------------------------------------------------------------

    def csms_call(self, action: str, status: str) -> None:
        """The chargers answered a CSMS CALL: ``status`` is the answer's ``status`` field,
        "result" when it has none, "error" for a CALLERROR (see :meth:`link_factory`)."""
        key = (action, status)
        child = self._csms_calls.get(key)
        if child is None:
            action_value = action_label(action)
            known = status in ("result", "error") or status in known_statuses()
            child = self.metrics.csms_calls.labels(action_value, status if known else OTHER)
            if action_value != OTHER and known:
                self._csms_calls[key] = child
        child.inc()

    def link_factory(self, base: Callable[..., Any] = links.Link) -> Callable[..., Any]:
        """A ``link_factory`` for :class:`~loadgen.runner.StationRunner` that counts the
        CSMS's CALLs and how the station answered them (``csms_calls_total``)."""

        def make(url: str, version: Any, handler: Any, **options: Any) -> Any:
            return base(url, version, _CountingHandler(handler, self), **options)

        return make

    # -- chargers ------------------------------------------------------------------------

    def add_station(self, station: Any) -> None:
        """Start following a station (a :class:`~loadgen.station.Station`): its site, its
        state for ``site_chargers`` and its offline queue."""
        charger_id = station.charger.id
        if charger_id in self._chargers:
            self.remove_station(charger_id)
        charger = _Charger(station.charger.site_id, station)
        self._chargers[charger_id] = charger
        self._site_state(charger.site, charger.state).inc()

    def remove_station(self, charger_id: str) -> None:
        """The station is gone (its user stopped): it leaves the site counts; transactions
        it still had running or unacknowledged are accounted for."""
        charger = self._chargers.pop(charger_id, None)
        if charger is None:
            return
        self._site_state(charger.site, charger.state).dec()
        self._set_booted(charger, False)
        self._set_version(charger, None)
        for local_id in list(charger.active):
            self._end_transaction(charger, local_id)
            self._active -= 1
        self.metrics.transactions_active.set(self._active)
        if charger.pending:
            self._transactions_total["unacknowledged"].inc(len(charger.pending))

    def runner_event(self, charger_id: str, kind: str, detail: Mapping[str, Any]) -> None:
        """A :class:`~loadgen.runner.StationRunner` ``on_event``: connected, disconnected,
        retry, gave_up."""
        charger = self._chargers.get(charger_id)
        if charger is None:
            return
        if kind == "connected":
            if detail.get("count", 1) > 1:
                self.metrics.reconnects.labels(charger.last_disconnect).inc()
            charger.connected = True
            self._set_booted(charger, False)
            charger.failed = False
            # the station speaks what the CSMS picked of the versions offered (set at connect)
            self._set_version(charger, version_label(charger.station.version.name))
            self.metrics.connections.labels(charger.version).inc()
        elif kind == "disconnected":
            charger.connected = False
            self._set_booted(charger, False)
            self._set_version(charger, None)
            charger.last_disconnect = reconnect_reason(str(detail.get("reason", "")))
        elif kind == "gave_up":
            charger.failed = True
        else:
            return
        self._update_state(charger)

    def station_event(self, charger_id: str, kind: str, detail: Mapping[str, Any]) -> None:
        """A :class:`~loadgen.station.Station` listener event (boot, status, started, meter,
        stopped, acknowledged, dropped; the others are ignored)."""
        handler = self._station_handlers.get(kind)
        if handler is None:
            return
        charger = self._chargers.get(charger_id)
        if charger is not None:
            handler(charger, charger_id, detail)

    def refresh(self) -> None:
        """Bring the computed gauges up to date (called before each snapshot)."""
        depth = 0
        for charger in self._chargers.values():
            depth += charger.station.queue_depth
        self.metrics.offline_queue_depth.set(depth)

    # -- station events ------------------------------------------------------------------

    def _on_boot(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        self._set_booted(charger, detail.get("status") == "Accepted")
        self._update_state(charger)

    def _set_booted(self, charger: _Charger, booted: bool) -> None:
        """Keep ``chargers_booted`` in step: it counts transitions, not a scan of chargers."""
        if booted == charger.booted:
            return
        charger.booted = booted
        self._booted += 1 if booted else -1
        self.metrics.chargers_booted.set(self._booted)

    def _set_version(self, charger: _Charger, version: str | None) -> None:
        """Keep ``version_chargers`` in step: the charger leaves its old version's count."""
        if charger.version is not None:
            self.metrics.version_chargers.labels(charger.version).dec()
        charger.version = version
        if version is not None:
            self.metrics.version_chargers.labels(version).inc()

    def _on_status(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        where = (detail.get("evse_id", 0), detail.get("connector_id", 0))
        if detail.get("status") in _UNAVAILABLE:
            charger.unavailable.add(where)
        else:
            charger.unavailable.discard(where)
        self._update_state(charger)

    def _on_started(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        transaction = detail["transaction"]
        if transaction.local_id in charger.active:
            return
        charger.active[transaction.local_id] = _Transaction(charger.site, transaction.start_wh)
        self._site_power_entry(charger.site)[1] += 1
        self._active += 1
        self.metrics.transactions_active.set(self._active)
        self._update_state(charger)

    def _on_meter(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        entry = charger.active.get(detail["transaction"].local_id)
        if entry is None:
            return
        energy = detail.get("energy_wh")
        if energy is not None and energy > entry.last_wh:
            self._energy_child(entry.site).inc(energy - entry.last_wh)
            entry.last_wh = energy
        power = detail.get("power_w")
        if power is not None and power != entry.power_w:
            self._site_power_entry(entry.site)[0].inc(power - entry.power_w)
            entry.power_w = power

    def _on_stopped(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        transaction = detail["transaction"]
        entry = charger.active.get(transaction.local_id)
        if entry is None:
            return
        stop_wh = transaction.stop_wh
        if stop_wh is not None and stop_wh > entry.last_wh:
            self._energy_child(entry.site).inc(stop_wh - entry.last_wh)
            entry.last_wh = stop_wh
        self._end_transaction(charger, transaction.local_id)
        self._active -= 1
        self.metrics.transactions_active.set(self._active)
        charger.pending[transaction.local_id] = transaction
        self._update_state(charger)

    def _on_acknowledged(
        self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]
    ) -> None:
        transaction = detail["transaction"]
        if charger.pending.pop(transaction.local_id, None) is not None:
            self._transactions_total["completed"].inc()

    def _on_dropped(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        action = str(detail.get("action", ""))
        self.metrics.dropped_messages.labels(action_label(action)).inc()
        payload = detail.get("payload") or {}
        if action == "StopTransaction":
            csms_id = payload.get("transactionId")
            match = [k for k, t in charger.pending.items() if t.csms_id == csms_id]
        elif action == "TransactionEvent" and payload.get("eventType") == "Ended":
            local_id = (payload.get("transactionInfo") or {}).get("transactionId")
            match = [local_id] if local_id in charger.pending else []
        else:
            return
        for local_id in match:
            del charger.pending[local_id]
            self._transactions_total["dropped"].inc()

    def _on_authorization(
        self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]
    ) -> None:
        labels = authorization_labels(detail.get("status"), detail.get("message"))
        self.metrics.authorizations.labels(*labels).inc()

    def _on_rejected(self, charger: _Charger, charger_id: str, detail: Mapping[str, Any]) -> None:
        transaction = detail["transaction"]
        rules = getattr(charger.station, "rules", None)
        if rules is not None and rules.unknown_to_csms(transaction):
            # 1.6, no transaction id from the CSMS: no end to wait for (not unacknowledged)
            charger.pending.pop(transaction.local_id, None)

    # -- helpers -------------------------------------------------------------------------

    def _end_transaction(self, charger: _Charger, local_id: str) -> None:
        entry = charger.active.pop(local_id)
        power = self._site_power_entry(entry.site)
        power[1] -= 1
        if power[1] <= 0:
            power[1] = 0
            power[0].set(0.0)  # no float residue once a site is idle
        elif entry.power_w:
            power[0].dec(entry.power_w)

    def _update_state(self, charger: _Charger) -> None:
        state = charger.compute_state()
        if state != charger.state:
            self._site_state(charger.site, charger.state).dec()
            self._site_state(charger.site, state).inc()
            charger.state = state

    def _site_state(self, site: str, state: str) -> Any:
        child = self._site_states.get((site, state))
        if child is None:
            known = self.sites.get(site)
            lat = _coordinate(known.lat) if known else ""
            lon = _coordinate(known.lon) if known else ""
            for each in SITE_STATES:  # a site shows every state, zeros included
                self._site_states[(site, each)] = self.metrics.site_chargers.labels(
                    site, lat, lon, each
                )
            child = self._site_states[(site, state)]
        return child

    def _site_power_entry(self, site: str) -> list[Any]:
        entry = self._site_power.get(site)
        if entry is None:
            entry = self._site_power[site] = [self.metrics.power.labels(site), 0]
        return entry

    def _energy_child(self, site: str) -> Any:
        child = self._site_energy.get(site)
        if child is None:
            child = self._site_energy[site] = self.metrics.energy.labels(site)
        return child


class _CountingHandler:
    """Wraps a link's CallHandler (the station runner) to count the CSMS's CALLs."""

    __slots__ = ("inner", "observer")

    def __init__(self, inner: Any, observer: MetricsObserver) -> None:
        self.inner = inner
        self.observer = observer

    def on_call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            reply = self.inner.on_call(action, payload)
        except Exception:  # CallErrorReply, or a failure the link answers as InternalError
            self.observer.csms_call(action, "error")
            raise
        self.observer.csms_call(action, status_label(reply))
        return reply

    def on_disconnect(self, code: int | None, reason: str) -> None:
        self.inner.on_disconnect(code, reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
