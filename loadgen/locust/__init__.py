"""Locust glue: ``from loadgen.locust import ChargerUser`` in a locustfile is all it takes.

Importing this package registers the command-line options and event hooks
(:mod:`.plugin`); :class:`ChargerUser` is one charging station per Locust user.
"""

from loadgen.locust import plugin
from loadgen.locust.user import ChargerUser

__all__ = ["ChargerUser", "plugin"]
