"""A station's device model: the components and variables a CSMS reads and sets (pure).

One model answers 2.0.1 GetVariables, SetVariables, GetBaseReport and GetReport and 1.6
GetConfiguration and ChangeConfiguration, so what a CSMS reads in a report is what it reads
one variable at a time. It is small, like the part of a real charger's model a CSMS looks at
first: the station, its EVSEs and connectors and the controllers whose variables the station
acts on (OCPPCommCtrlr, SampledDataCtrlr, TxCtrlr, AuthCtrlr, LocalAuthListCtrlr,
ReservationCtrlr, SecurityCtrlr, DeviceDataCtrlr, MonitoringCtrlr, DisplayMessageCtrlr).

Values are read from the station when asked (never copied), and writable ones are written
through the station, which refuses what it cannot honour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadgen.station import Station

#: GetReport's componentCriteria: a component matches one when it has a variable of that
#: name whose value is "true" (2.0.1 ComponentCriterionEnumType)
CRITERIA = ("Active", "Available", "Enabled", "Problem")


@dataclass(frozen=True)
class Variable:
    """One variable of one component (instance), with how to read and write it."""

    component: str
    name: str
    read: Callable[[], str]
    #: None: read-only; else returns a SetVariableStatus ("Accepted", "Rejected", ...)
    write: Callable[[str], str] | None = None
    evse: int | None = None
    connector: int | None = None
    instance: str | None = None  # the variable's instance (ItemsPerMessage[GetReport])
    data_type: str = "string"  # 2.0.1 DataEnumType
    unit: str | None = None
    #: the 1.6 configuration key of the same setting, if 1.6 has one
    key_16: str | None = None

    def component_ref(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": self.component}
        if self.evse is not None:
            evse: dict[str, int] = {"id": self.evse}
            if self.connector is not None:
                evse["connectorId"] = self.connector
            ref["evse"] = evse
        return ref

    def variable_ref(self) -> dict[str, Any]:
        ref = {"name": self.name}
        if self.instance is not None:
            ref["instance"] = self.instance
        return ref

    def report_data(self) -> dict[str, Any]:
        """This variable as a NotifyReport reportData entry."""
        characteristics: dict[str, Any] = {"dataType": self.data_type, "supportsMonitoring": True}
        if self.unit is not None:
            characteristics["unit"] = self.unit
        return {
            "component": self.component_ref(),
            "variable": self.variable_ref(),
            "variableAttribute": [
                {
                    "type": "Actual",
                    "value": self.read(),
                    "mutability": "ReadOnly" if self.write is None else "ReadWrite",
                }
            ],
            "variableCharacteristics": characteristics,
        }


class DeviceModel:
    """The variables of one station, looked up the way OCPP 2.0.1 addresses them."""

    def __init__(self, variables: Iterable[Variable]) -> None:
        self.variables = list(variables)

    def lookup(
        self, component: dict[str, Any], variable: dict[str, Any]
    ) -> tuple[Variable | None, str]:
        """The variable a ComponentType / VariableType pair names, or None with the
        status to answer: "UnknownComponent" or "UnknownVariable"."""
        evse = component.get("evse")
        candidates = [v for v in self.variables if v.component == component["name"]]
        if evse is not None:
            candidates = [
                v
                for v in candidates
                if v.evse == evse["id"]
                and (evse.get("connectorId") is None or v.connector == evse.get("connectorId"))
            ]
        if not candidates:
            return None, "UnknownComponent"
        named = [
            v
            for v in candidates
            if v.name == variable["name"] and v.instance == variable.get("instance")
        ]
        if not named:
            return None, "UnknownVariable"
        # A component named without its EVSE: the station-wide one, else the first EVSE's
        # (older CSMSs read "EVSE.Power" without an id).
        named.sort(key=lambda v: (v.evse is not None, v.evse or 0, v.connector or 0))
        return named[0], "Accepted"

    def components(self) -> set[str]:
        return {v.component for v in self.variables}

    # -- reports -------------------------------------------------------------------------

    def base_report(self, report_base: str) -> list[Variable] | None:
        """The variables of a GetBaseReport; None for a report base we do not know."""
        if report_base == "FullInventory":
            return list(self.variables)
        if report_base == "ConfigurationInventory":
            return [v for v in self.variables if v.write is not None]
        if report_base == "SummaryInventory":
            return [v for v in self.variables if v.name in ("AvailabilityState", "Problem")]
        return None

    def report(
        self, component_variables: list[dict[str, Any]] | None, criteria: list[str] | None
    ) -> list[Variable]:
        """The variables of a GetReport: those of the components meeting every criterion,
        narrowed to ``component_variables`` when given."""
        selected = list(self.variables)
        if criteria:
            keep = {
                _instance_key(v)
                for v in self.variables
                if v.name in criteria and v.read().lower() == "true"
            }
            selected = [v for v in selected if _instance_key(v) in keep]
        if component_variables:
            selected = [v for v in selected if any(_matches(v, cv) for cv in component_variables)]
        return selected

    # -- 1.6 -----------------------------------------------------------------------------

    def keys_16(self) -> dict[str, Variable]:
        return {v.key_16: v for v in self.variables if v.key_16 is not None}


def _instance_key(v: Variable) -> tuple[str, int | None, int | None]:
    return v.component, v.evse, v.connector


def _matches(v: Variable, component_variable: dict[str, Any]) -> bool:
    component = component_variable["component"]
    if component["name"] != v.component:
        return False
    evse = component.get("evse")
    if evse is not None and (
        evse["id"] != v.evse
        or (evse.get("connectorId") is not None and evse["connectorId"] != v.connector)
    ):
        return False
    variable = component_variable.get("variable")
    if variable is None:
        return True
    return variable["name"] == v.name and variable.get("instance") in (None, v.instance)


def _const(value: str) -> Callable[[], str]:
    return lambda: value


# The settings the station already keeps (Station.variables()), described.
_DECLARED: dict[tuple[str, str], dict[str, Any]] = {
    ("OCPPCommCtrlr", "HeartbeatInterval"): {
        "data_type": "integer",
        "unit": "s",
        "key_16": "HeartbeatInterval",
    },
    ("SampledDataCtrlr", "TxUpdatedInterval"): {
        "data_type": "integer",
        "unit": "s",
        "key_16": "MeterValueSampleInterval",
    },
    ("SecurityCtrlr", "Identity"): {"read_only": True},
    ("EVSE", "Power"): {"read_only": True, "data_type": "decimal", "unit": "W"},
}

MEASURANDS = "Energy.Active.Import.Register,Power.Active.Import,SoC"


def build(station: Station) -> DeviceModel:
    """The device model of ``station``: its own settings (:meth:`Station.variables`, written
    through :meth:`Station.set_variable`) and the components a charger reports."""
    variables: list[Variable] = []
    for component, name in station.variables():
        declared = dict(_DECLARED.get((component, name), {}))
        read_only = declared.pop("read_only", False)
        if component == "EVSE":
            continue  # per EVSE below
        if "key_16" not in declared and component == "OCPPCommCtrlr":
            declared["key_16"] = name  # RetryBackOff*: vendor keys of the same names in 1.6
            declared.setdefault("data_type", "integer")

        def read(key: tuple[str, str] = (component, name)) -> str:
            return station.variables()[key]

        def write(value: str, key: tuple[str, str] = (component, name)) -> str:
            return station.set_variable(*key, value)

        variables.append(Variable(component, name, read, None if read_only else write, **declared))
    charger = station.charger

    def availability() -> str:
        return "Available" if any(e.operative for e in station.evses.values()) else "Unavailable"

    variables += [
        Variable("ChargingStation", "AvailabilityState", availability),
        Variable("ChargingStation", "Available", _const("true"), data_type="boolean"),
        Variable("ChargingStation", "Model", _const(charger.model)),
        Variable("ChargingStation", "VendorName", _const(charger.vendor)),
        Variable("ChargingStation", "SupplyPhases", _const("3"), data_type="integer"),
    ]
    for evse in station.evses.values():

        def evse_state(evse_id: int = evse.id) -> str:
            e = station.evses[evse_id]
            if not e.operative:
                return "Unavailable"
            if e.transaction is not None:
                return "Occupied"
            return next(iter(e.connectors.values()), "Available")

        rated = str(int(charger.rated_power_w))
        variables += [
            Variable("EVSE", "AvailabilityState", evse_state, evse=evse.id),
            Variable("EVSE", "Available", _const("true"), evse=evse.id, data_type="boolean"),
            Variable("EVSE", "Power", _const(rated), evse=evse.id, data_type="decimal", unit="W"),
        ]
        for connector_id in evse.connectors:

            def connector_state(evse_id: int = evse.id, connector: int = connector_id) -> str:
                return station.evses[evse_id].connectors[connector]

            variables += [
                Variable(
                    "Connector",
                    "AvailabilityState",
                    connector_state,
                    evse=evse.id,
                    connector=connector_id,
                ),
                Variable(
                    "Connector",
                    "Available",
                    _const("true"),
                    evse=evse.id,
                    connector=connector_id,
                    data_type="boolean",
                ),
                Variable(
                    "Connector",
                    "ConnectorType",
                    _const("cType2"),
                    evse=evse.id,
                    connector=connector_id,
                ),
            ]
    # Controllers whose function the station has; 1.6 calls one of them a key of its own.
    enabled = {
        "SampledDataCtrlr": None,
        "AuthCtrlr": None,
        "LocalAuthListCtrlr": "LocalAuthListEnabled",
        "ReservationCtrlr": None,
        "MonitoringCtrlr": None,
        "DisplayMessageCtrlr": None,
    }
    variables += [
        Variable(component, "Enabled", _const("true"), data_type="boolean", key_16=key_16)
        for component, key_16 in enabled.items()
    ]
    variables += [
        Variable(
            "SampledDataCtrlr",
            "TxUpdatedMeasurands",
            _const(MEASURANDS),
            data_type="MemberList",
            key_16="MeterValuesSampledData",
        ),
        Variable(
            "SampledDataCtrlr", "TxEndedMeasurands", _const(MEASURANDS), data_type="MemberList"
        ),
        Variable("TxCtrlr", "TxStartPoint", _const("Authorized"), data_type="MemberList"),
        Variable("TxCtrlr", "TxStopPoint", _const("Authorized"), data_type="MemberList"),
        Variable(
            "TxCtrlr",
            "StopTxOnInvalidId",
            _const("true"),
            data_type="boolean",
            key_16="StopTransactionOnInvalidId",
        ),
        # A remote start begins charging without an Authorize first.
        Variable(
            "AuthCtrlr",
            "AuthorizeRemoteStart",
            _const("false"),
            data_type="boolean",
            key_16="AuthorizeRemoteTxRequests",
        ),
        Variable(
            "LocalAuthListCtrlr",
            "Entries",
            lambda: str(len(station.commands.local_list.entries)),
            data_type="integer",
        ),
        Variable(
            "LocalAuthListCtrlr",
            "ItemsPerMessage",
            _const(str(LOCAL_LIST_MAX)),
            data_type="integer",
            key_16="SendLocalListMaxLength",
        ),
        Variable("ReservationCtrlr", "NonEvseSpecific", _const("true"), data_type="boolean"),
        Variable(
            "DeviceDataCtrlr",
            "ItemsPerMessage",
            lambda: str(station.config.report_items_per_message),
            instance="GetReport",
            data_type="integer",
        ),
        Variable(
            "DisplayMessageCtrlr",
            "DisplayMessages",
            lambda: str(len(station.commands.display_messages)),
            data_type="integer",
        ),
    ]
    return DeviceModel(variables)


#: the most entries a local authorisation list holds (and one SendLocalList carries)
LOCAL_LIST_MAX = 1000


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in parts of at most ``size`` (one empty part for no items)."""
    size = max(1, size)
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]
