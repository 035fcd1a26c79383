"""What the stub benchmarks share, one module per concern: the machine and this process
(:mod:`_common.machine`), server subprocesses (:mod:`_common.servers`) and the raw baseline
server (:mod:`_common.baseline`), fresh databases (:mod:`_common.databases`), the lean
OCPP-J charger (:mod:`_common.charger`) that load-client processes run
(:mod:`_common.clients`), and percentiles and tables (:mod:`_common.figures`).

Everything here talks to 127.0.0.1 only, and every wait is bounded. Servers run as
subprocesses pinned to one core (``--server-core``); load clients run in
``multiprocessing`` processes pinned to the other cores. Each subprocess gets
``PR_SET_PDEATHSIG`` so it dies with the benchmark even if the benchmark is SIGKILLed;
normal exits, exceptions and Ctrl-C stop them through context managers.

Importing the package puts the project's root on ``sys.path``: ``python benchmarks/x.py``
puts ``benchmarks/``, not the root, first.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/x.py` puts benchmarks/, not the root, first
    sys.path.insert(0, str(ROOT))
#: the folder of the benchmark scripts (where ``_common`` is importable from)
BENCHMARKS = ROOT / "benchmarks"

HOST = "127.0.0.1"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
SUBPROTOCOL = "ocpp2.0.1"
