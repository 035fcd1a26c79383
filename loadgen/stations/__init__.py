"""A station's rules, one module per OCPP version: what differs between the versions.

The :class:`~loadgen.station.Station` core (the queue, the timers, the EVSEs, the offline
replay) is the same for every version; what it sends and how it reads the CSMS's answers is
asked of its version's :class:`Rules` (:mod:`.v16`, :mod:`.v201`, :mod:`.v21`, picked by
:func:`rules_for`), as :mod:`loadgen.protocols` builds each version's messages and
``csms_stub.handlers`` answers them. Each module also holds its version's table of the
CSMS-initiated CALLs a station answers (``Rules.handlers``). 2.1 extends 2.0.1 (a subclass).

Adding a version is adding a module here with a ``RULES`` instance and naming it in
:data:`RULES` below. Rules objects hold no state of a station: one serves them all.
"""

from __future__ import annotations

from loadgen.protocols import OCPP16, OCPP21, OCPP201, Version
from loadgen.stations import v16, v21, v201
from loadgen.stations.base import Handler, Readings, Rules

__all__ = ["RULES", "Handler", "Readings", "Rules", "rules_for"]

#: every version's rules, by version name
RULES: dict[str, Rules] = {
    OCPP16.name: v16.RULES,
    OCPP201.name: v201.RULES,
    OCPP21.name: v21.RULES,
}


def rules_for(version: Version) -> Rules:
    """The rules of ``version``."""
    return RULES[version.name]
