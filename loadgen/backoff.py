"""A charging station's reconnect back-off, as OCPP 2.0.1 defines it (pure).

OCPP 2.0.1 (OCPPCommCtrlr, "Reconnecting"): the first reconnect attempt comes after
``RetryBackOffWaitMinimum`` seconds plus a random value of at most
``RetryBackOffRandomRange`` seconds; after every failed attempt the station doubles the
previous wait, at most ``RetryBackOffRepeatTimes`` times, then keeps reconnecting with that
last wait. The random part is what spreads thousands of stations that lost the CSMS at the
same moment (its restart) over the range, instead of all coming back in one wave.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: A real charger's shipping values, our defaults. The spec leaves them to the vendor;
#: a minimum of a few seconds lets a restarting CSMS come up before the first try, and a
#: random range of 30 s spreads a mass reconnect of thousands over half a minute (at the
#: 1, 2, 4 s of simple back-off they arrived within 2 s, all retrying at once). Three
#: doublings, capped by ``cap``, keep a long outage from hammering the CSMS.
WAIT_MINIMUM_S = 5.0
RANDOM_RANGE_S = 30.0
REPEAT_TIMES = 3
CAP_S = 60.0

#: the device-model variables (2.0.1; 1.6 accepts them as vendor configuration keys)
COMPONENT = "OCPPCommCtrlr"
WAIT_MINIMUM = "RetryBackOffWaitMinimum"
RANDOM_RANGE = "RetryBackOffRandomRange"
REPEAT = "RetryBackOffRepeatTimes"
VARIABLES = (WAIT_MINIMUM, RANDOM_RANGE, REPEAT)


@dataclass(frozen=True)
class RetryBackOff:
    """Reconnect waits: ``(wait_minimum + U(0, random_range)) * 2**min(n - 1, repeat_times)``
    for the ``n``-th attempt of one outage, never more than ``cap``.

    ``cap`` (``--reconnect-cap``) and ``max_tries`` (``--reconnect-tries``) are the load
    generator's own bounds, not OCPP's: the spec's back-off never gives up.
    """

    wait_minimum: float = WAIT_MINIMUM_S
    random_range: float = RANDOM_RANGE_S
    repeat_times: int = REPEAT_TIMES
    cap: float = CAP_S
    max_tries: int | None = None  # None: forever (load tests)

    def first_wait(self, rng: random.Random | None = None) -> float:
        """The wait before an outage's first attempt: drawn once per outage."""
        return self.wait_minimum + (rng or random).uniform(0.0, self.random_range)

    def wait(self, attempt: int, first: float) -> float:
        """The wait before the ``attempt``-th attempt (1-based) of an outage whose first
        wait was ``first``: doubled after each failure, ``repeat_times`` times at most."""
        doublings = min(max(0, attempt - 1), max(0, self.repeat_times))
        return min(self.cap, first * 2.0**doublings)
