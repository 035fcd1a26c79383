"""OCPP 2.1 tariffs as a station keeps them, and the running cost they give.

A CSMS sets a tariff with SetDefaultTariff (per EVSE, 0 for all), ChangeTransactionTariff
(one transaction) or in an AuthorizeResponse. The station prices a transaction with the
simplest reading of a TariffType: the first energy price (per kWh), the first charging-time
price (per minute, while energy flows), the first idle-time price (per minute, while it
does not) and the first fixed fee. Conditions (time of day, power bands...) and tax rates
are not evaluated: costs are ``exclTax``. Good enough for a load tester whose CSMS wants to
see ``costDetails`` move; not a billing engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadgen.protocols import parse_timestamp


def _first_price(component: dict[str, Any] | None, key: str) -> float:
    if not component:
        return 0.0
    prices = component.get("prices") or [{}]
    return float(prices[0].get(key, 0.0))


@dataclass(frozen=True)
class Tariff:
    """A schema-valid TariffType, read once."""

    id: str
    currency: str
    price_kwh: float = 0.0
    price_minute: float = 0.0
    idle_price_minute: float = 0.0
    fixed_fee: float = 0.0
    #: epoch seconds (the CSMS's clock); None: active at once
    valid_from: float | None = None

    @classmethod
    def from_ocpp(cls, raw: dict[str, Any]) -> Tariff:
        """Read a TariffType; raises ValueError for a validFrom that is no dateTime."""
        fixed = raw.get("fixedFee") or {}
        fixed_prices = fixed.get("prices") or [{}]
        valid_from = raw.get("validFrom")
        return cls(
            id=raw["tariffId"],
            currency=raw["currency"],
            price_kwh=_first_price(raw.get("energy"), "priceKwh"),
            price_minute=_first_price(raw.get("chargingTime"), "priceMinute"),
            idle_price_minute=_first_price(raw.get("idleTime"), "priceMinute"),
            fixed_fee=float(fixed_prices[0].get("priceFixed", 0.0)),
            valid_from=None if valid_from is None else parse_timestamp(valid_from).timestamp(),
        )

    def cost(self, energy_wh: float, charging_s: float, idle_s: float = 0.0) -> float:
        """The cost so far (excluding tax), rounded to a hundredth of the currency."""
        total = (
            self.fixed_fee
            + self.price_kwh * energy_wh / 1000.0
            + self.price_minute * charging_s / 60.0
            + self.idle_price_minute * idle_s / 60.0
        )
        return round(total, 2)


class Tariffs:
    """The default tariffs per EVSE (0: every EVSE), by tariffId."""

    def __init__(self) -> None:
        self.defaults: dict[int, dict[str, Tariff]] = {}

    def set_default(self, evse_id: int, tariff: Tariff) -> str:
        """SetDefaultTariff's status: a tariffId already in use elsewhere is a duplicate."""
        for other_evse, tariffs in self.defaults.items():
            if other_evse != evse_id and tariff.id in tariffs:
                return "DuplicateTariffId"
        self.defaults.setdefault(evse_id, {})[tariff.id] = tariff
        return "Accepted"

    def for_evse(self, evse_id: int, now: float) -> Tariff | None:
        """The default tariff in force on ``evse_id`` at ``now``: the EVSE's own before the
        station-wide one; of several, the one that became valid last."""
        for key in (evse_id, 0):
            valid = [
                t
                for t in self.defaults.get(key, {}).values()
                if t.valid_from is None or t.valid_from <= now
            ]
            if valid:
                return max(valid, key=lambda t: t.valid_from or 0.0)
        return None

    def clear(self, tariff_ids: list[str] | None, evse_id: int | None) -> list[dict[str, Any]]:
        """ClearTariffs' clearTariffsResult: every matching tariff removed."""
        results = []
        for key in list(self.defaults):
            if evse_id is not None and key != evse_id:
                continue
            tariffs = self.defaults[key]
            for tariff_id in list(tariffs):
                if tariff_ids is None or tariff_id in tariff_ids:
                    del tariffs[tariff_id]
                    results.append({"tariffId": tariff_id, "status": "Accepted"})
            if not tariffs:
                del self.defaults[key]
        return results or [{"status": "NoTariff"}]

    def assignments(self, evse_id: int) -> list[dict[str, Any]]:
        """GetTariffs' tariffAssignments for ``evse_id`` (0: every EVSE)."""
        found: dict[str, list[int]] = {}
        for key, tariffs in self.defaults.items():
            if evse_id in (0, key) or key == 0:
                for tariff_id in tariffs:
                    found.setdefault(tariff_id, []).append(key)
        return [
            {"tariffId": tariff_id, "tariffKind": "DefaultTariff", "evseIds": sorted(evses)}
            for tariff_id, evses in found.items()
        ]
