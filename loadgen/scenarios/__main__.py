"""``python -m loadgen.scenarios {1..5|all} --csms ws://localhost:9000 [--api URL]``."""

from gevent import monkey

monkey.patch_all()  # the scenarios call the CSMS's HTTP API while stations run

import argparse  # noqa: E402
import os  # noqa: E402
import ssl  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from loadgen import fleet as fleets  # noqa: E402
from loadgen.link import tls_context  # noqa: E402
from loadgen.protocols import VERSIONS  # noqa: E402
from loadgen.scenarios.harness import Harness, ScenarioFailed  # noqa: E402
from loadgen.scenarios.seed import SCENARIOS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadgen.scenarios",
        description="Replay the seed's five integration scenarios against a CSMS.",
    )
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument(
        "--csms",
        default="ws://localhost:9000",
        help="OCPP WebSocket base URL; the charger id is appended",
    )
    parser.add_argument(
        "--api",
        default=None,
        help="the CSMS's HTTP API (csms_stub's), for scenario 3 and the stored-data checks",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="run simulated time N times faster (heartbeats, meter values)",
    )
    parser.add_argument("--ocpp-version", default="2.0.1", choices=list(VERSIONS))
    parser.add_argument(
        "--ocpp-validate",
        action="store_true",
        help="check every frame both ways against the version's JSON schemas",
    )
    parser.add_argument(
        "--fleet",
        default=None,
        help="fleet TOML (default: the seed's); its passwords enable Basic auth",
    )
    parser.add_argument(
        "--ca-bundle", help="wss://: CA bundle to check the CSMS against (security profile 2)"
    )
    parser.add_argument(
        "--client-cert", help="wss://: the stations' certificate (PEM), security profile 3"
    )
    parser.add_argument("--client-key", help="its key, if not in --client-cert")
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be positive")
    try:
        fleet = fleets.load(args.fleet or fleets.SEED_FLEET)
        ssl_context = None
        if args.csms.startswith("wss://") or args.ca_bundle or args.client_cert:
            ssl_context = tls_context(args.ca_bundle, args.client_cert, args.client_key)
    except (fleets.FleetError, OSError, ssl.SSLError) as exc:
        parser.exit(2, f"loadgen.scenarios: {exc}\n")
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    failed = []
    for name in names:
        harness = Harness(
            args.csms,
            args.api,
            args.time_scale,
            version=args.ocpp_version,
            fleet=fleet,
            # Security profile 1 for chargers without a fleet password: from the
            # environment, so it shows in no process list.
            password=os.environ.get("OCPP_BASIC_AUTH_PASSWORD") or None,
            ssl_context=ssl_context,
            validate=args.ocpp_validate,
        )
        harness.say(f"== scenario {name}: {SCENARIOS[name].__doc__.splitlines()[0]}")
        started = time.monotonic()
        try:
            SCENARIOS[name](harness)
        except ScenarioFailed as exc:
            harness.failures.append(str(exc))
            harness.say(f"  FAIL {exc}")
        finally:
            harness.stop_all()
        harness.check_protocol()
        verdict = "passed" if not harness.failures else "FAILED"
        harness.say(
            f"== scenario {name} {verdict}: {harness.checks - len(harness.failures)}"
            f"/{harness.checks} checks in {time.monotonic() - started:.1f} s"
        )
        if harness.failures:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
