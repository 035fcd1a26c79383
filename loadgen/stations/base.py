"""What every version's station rules share: the :class:`Rules` a version fills in, and
how a station reads the CSMS's verdict on an idToken."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from loadgen.station import Evse, Station, Transaction

#: answers a CSMS-initiated CALL: (station, request that passed validation) -> CALLRESULT
Handler = Callable[["Station", dict[str, Any]], dict[str, Any]]

#: the only authorization status that lets a transaction start or go on
ACCEPTED = "Accepted"
#: why a 1.6 transaction the CSMS accepted without assigning an id (0 or less) ended
NO_TRANSACTION_ID = "no transactionId"

#: a station's readings at one moment: energy register (Wh), power (W), EV state of charge (%)
Readings = tuple[float, float, float | None]


class Rules:
    """What one OCPP version's station does differently; the station core calls these."""

    #: the CSMS-initiated actions this version's station answers, by action
    handlers: ClassVar[dict[str, Handler]] = {}
    #: the connector status once an EV is plugged in
    plugged_status: ClassVar[str] = "Occupied"
    #: the connector status while the EV is unplugged after a transaction (None: none)
    finishing_status: ClassVar[str | None] = None
    #: the idTokenInfo / idTagInfo field that carries the CSMS's verdict on a token
    verdict_field: ClassVar[str] = "idTokenInfo"
    #: a charging profile replaces one of the same purpose at the same stack level (1.6)
    replace_same_stack_level: ClassVar[bool] = False
    #: a change of the power a profile allows is reported at once (ChargingRateChanged)
    reports_rate_change: ClassVar[bool] = True

    def charging_status(self, charging: bool) -> str | None:
        """The connector status that follows the transaction's charging state (None: the
        version reports that in its transaction messages instead)."""
        return None

    def boot_notification(self, station: Station) -> dict[str, Any]:
        raise NotImplementedError

    def status_notification(
        self, station: Station, evse_id: int, connector_id: int, status: str, timestamp: float
    ) -> dict[str, Any]:
        raise NotImplementedError

    def station_statuses(self, station: Station) -> list[tuple[int, int, str]]:
        """(0, 0, status) of the station as a whole where the version reports one (1.6's
        connector 0); none by default."""
        return []

    def connector_status(
        self, station: Station, evse_id: int, connector_id: int, status: str, timestamp: float
    ) -> tuple[str, dict[str, Any]]:
        """The message that reports a connector's status: a StatusNotification (2.x may
        report it with NotifyEvent instead, see :mod:`.v201`)."""
        return "StatusNotification", self.status_notification(
            station, evse_id, connector_id, status, timestamp
        )

    def boot_statuses(self, station: Station) -> list[tuple[int, int, str]]:
        """(EVSE id, connector id, status) of every StatusNotification after a boot."""
        return self.station_statuses(station) + [
            (evse.id, connector_id, status)
            for evse in station.evses.values()
            for connector_id, status in evse.connectors.items()
        ]

    def authorize(self, station: Station, transaction: Transaction) -> dict[str, Any]:
        raise NotImplementedError

    def authorized(self, transaction: Transaction, reply: dict[str, Any]) -> None:
        """The CSMS accepted the token (Authorize): read what else its answer says."""

    def unknown_to_csms(self, transaction: Transaction) -> bool:
        """The CSMS holds no such transaction (1.6: it never assigned it an id)."""
        return False

    def queue_start(
        self, station: Station, evse: Evse, transaction: Transaction, readings: Readings
    ) -> None:
        raise NotImplementedError

    def queue_update(
        self,
        station: Station,
        evse: Evse,
        transaction: Transaction,
        trigger: str,
        readings: Readings,
    ) -> None:
        raise NotImplementedError

    def queue_end(
        self, station: Station, evse: Evse, transaction: Transaction, trigger: str
    ) -> None:
        raise NotImplementedError

    def check_limits(self, station: Station, evse: Evse) -> None:
        """End the transaction on ``evse`` if a limit the CSMS set is reached (2.1)."""

    def trigger(self, station: Station, message: str) -> bool:
        """TriggerMessage for a message beyond the core's (boot, heartbeat, status, meter
        values); False: not one this version's station sends."""
        return False

    def trigger_readings(self, station: Station, evse: Evse, message: str) -> None:
        """TriggerMessage MeterValues (2.0.1: or TransactionEvent) for ``evse``: its
        readings now, context Trigger."""
        raise NotImplementedError


def reading_context(trigger: str) -> str:
    """The sampledValue context of a transaction's reading sent for ``trigger``: Trigger
    when the CSMS asked for it (TriggerMessage), else a periodic sample."""
    return "Trigger" if trigger == "Trigger" else "Sample.Periodic"


def verdict(reply: dict[str, Any], info: str) -> str:
    """The status of an idTokenInfo / idTagInfo; a reply without one is no Accepted."""
    status = (reply.get(info) or {}).get("status")
    return status if isinstance(status, str) else "Invalid"
