"""The load generator's command-line options, and their validation (pure).

Options are added to Locust's parser (``events.init_command_line_parser``), so they also
work from Locust config files, ``LOCUST_*`` environment variables and the web UI.
:func:`settings_from_options` turns them into a checked :class:`Settings`, or raises
:class:`SettingsError` with one line for the person running the test.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Any

from loadgen import backoff, idtokens
from loadgen import fleet as fleets
from loadgen.capacity.config import CapacityConfig, parse_p95_slo
from loadgen.link import tls_context
from loadgen.metrics.labels import known_actions
from loadgen.profiles import ProfileError, ProfileMix, SessionPlan, parse_profile
from loadgen.protocols import Version, get_version
from loadgen.station import CONNECTOR_STATUS_MESSAGES


class SettingsError(ValueError):
    """An option value that cannot work; the message is one line."""


@dataclass
class Settings:
    host: str
    #: the first of ``versions``: what a station is built for until the CSMS chooses
    version: Version
    fleet: fleets.Fleet
    profile: ProfileMix
    session_plan: SessionPlan
    time_scale: float
    heartbeat_interval: float | None
    meter_interval: float
    call_timeout: float
    connect_timeout: float
    redis_url: str | None
    validate: bool
    reconnect_cap: float
    reconnect_tries: int | None
    offline_replay_rate: float
    #: idTokens by group (``""``: the run's pool; the fleet's ``site:<id>``,
    #: ``chargers:<n>``), each as :meth:`loadgen.idtokens.IdToken.item`
    tokens: dict[str, list[str]]
    csms_api: str | None = None
    #: --reconcile-db-url: the CSMS's database, read at the end (never logged: a password)
    reconcile_db_url: str | None = field(default=None, repr=False)
    #: --reconcile-mapping, loaded (a loadgen.reconcile.Mapping); None: csms_stub's tables
    reconcile_mapping: Any = None
    prometheus_port: int = 9646
    #: seconds a charger id / idToken lease lives unless renewed (renewed every third of it)
    lease_ttl: float = 30.0
    ssl_context: ssl.SSLContext | None = None
    #: the capacity search's settings; None: a plain run of --users
    capacity: CapacityConfig | None = None
    #: users started per second by the capacity search (Locust's --spawn-rate, or 100)
    capacity_spawn_rate: float = 100.0
    #: the user gave --spawn-rate: the concurrency steps ramp at it, not at the connect rate
    capacity_spawn_rate_pinned: bool = False
    #: seconds to keep serving the answer after the search (for Prometheus to scrape it)
    capacity_linger: float = 15.0
    #: write JSON + HTML reports here at the end of every run
    report_dir: str | None = None
    #: the stations' reconnect back-off (OCPP 2.0.1 RetryBackOff*; the CSMS may change it)
    retry_backoff: backoff.RetryBackOff = field(default_factory=backoff.RetryBackOff)
    #: --blackout-at / --blackout-for: every charger drops its connection at this second
    #: of the run for that many seconds (None: no blackout)
    blackout: tuple[float, float] | None = None
    #: real seconds a station stays away after a Reset or a firmware installation (+-25 %)
    reboot_delay: float = 8.0
    #: security profile 1 for chargers without a fleet password; never logged
    password: str | None = field(default=None, repr=False)
    #: --ocpp-version's versions in order: the subprotocols offered (one, or several)
    versions: tuple[Version, ...] = ()
    #: --check-slo: the SLOs a plain run is judged by at its end (None: not judged)
    slo: CapacityConfig | None = None
    #: --junit: write the verdicts (SLOs, capacity answers) here as JUnit XML
    junit: str | None = None
    #: --connector-status: StatusNotification or NotifyEvent; None: each version's way
    connector_status: str | None = None


def add_arguments(parser: Any) -> None:
    """Our options on Locust's parser; each also reads ``LOCUST_<NAME>`` from the
    environment (``--capacity-search``: ``LOCUST_CAPACITY_SEARCH=true``), as Locust's own do."""

    def add(*flags: str, **kwargs: Any) -> None:
        name = flags[0].lstrip("-").replace("-", "_").upper()
        parser.add_argument(*flags, env_var=f"LOCUST_{name}", **kwargs)

    def heading(title: str) -> None:
        """A heading for ``python -m loadgen options``; Locust's parser has none (argument
        groups would hide the options from its web UI)."""
        if hasattr(parser, "add_heading"):
            parser.add_heading(title)

    # On the parser itself, not a group: only those show in the web UI (is_secret too).
    heading("Protocol and fleet")
    add(
        "--ocpp-version",
        default="2.0.1",
        help="OCPP version the stations speak: 2.1, 2.0.1 or 1.6 (default 2.0.1); a comma "
        "list (2.1,2.0.1) offers each subprotocol in that order and speaks the CSMS's choice",
    )
    add(
        "--connector-status",
        default="",
        help="how 2.x stations report connector status: StatusNotification, or NotifyEvent "
        "(the connector's AvailabilityState); default: the version's way, NotifyEvent in 2.1 "
        "(which deprecates StatusNotification), StatusNotification in 2.0.1; 1.6 always "
        "sends StatusNotification",
    )
    add("--fleet", default="", help="fleet TOML file (default: a generated fleet of --fleet-size)")
    add(
        "--fleet-size",
        type=int,
        default=10_000,
        help="chargers in the generated fleet, the most users a run can have (default 10000)",
    )
    add(
        "--charger-id-pattern",
        default="",
        help="charger ids of the generated fleet, a format string given the charger's "
        "number: CP{:06d} (default: CP000001 ...)",
    )
    heading("What the stations do")
    # Locust has a --profile of its own (it groups runs), hence the prefix.
    add(
        "--ocpp-profile",
        default="sessions",
        help="idle | sessions | remote | mixed | mixed:idle=1,sessions=3 (default sessions)",
    )
    add(
        "--session-interarrival",
        type=float,
        default=600.0,
        help="mean simulated seconds between EVs at a station (sessions)",
    )
    add(
        "--session-stay",
        type=float,
        default=1800.0,
        help="mean simulated seconds an EV stays plugged in (sessions)",
    )
    add("--time-scale", type=float, default=1.0, help="simulated time runs this many times faster")
    add(
        "--heartbeat-interval",
        type=float,
        default=0.0,
        help="override the CSMS's heartbeat interval (simulated s; 0: use the CSMS's)",
    )
    add(
        "--meter-interval",
        type=float,
        default=60.0,
        help="meter values while charging, every N simulated seconds",
    )
    heading("The link: timeouts, reconnects, restarts")
    add(
        "--call-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the CSMS's reply to a CALL",
    )
    add(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds for TCP + TLS + WebSocket handshake",
    )
    add(
        "--reconnect-cap",
        type=float,
        default=60.0,
        help="longest back-off between reconnect attempts, seconds (caps the doublings)",
    )
    add(
        "--reconnect-tries",
        type=int,
        default=0,
        help="give a station up after N failed connects (0: never)",
    )
    add(
        "--retry-backoff-wait-minimum",
        type=float,
        default=backoff.WAIT_MINIMUM_S,
        help="OCPP RetryBackOffWaitMinimum: seconds before the first reconnect attempt "
        f"(plus the random range; default {backoff.WAIT_MINIMUM_S:g})",
    )
    add(
        "--retry-backoff-random-range",
        type=float,
        default=backoff.RANDOM_RANGE_S,
        help="OCPP RetryBackOffRandomRange: at most this many random seconds added to the "
        f"first wait, spreading a mass reconnect (default {backoff.RANDOM_RANGE_S:g})",
    )
    add(
        "--retry-backoff-repeat-times",
        type=int,
        default=backoff.REPEAT_TIMES,
        help="OCPP RetryBackOffRepeatTimes: how often the wait doubles after failed attempts "
        f"(default {backoff.REPEAT_TIMES})",
    )
    add(
        "--blackout-at",
        type=float,
        default=0.0,
        help="rehearse a CSMS restart: at S seconds of the run every charger drops its "
        "connection (with --blackout-for)",
    )
    add(
        "--blackout-for",
        type=float,
        default=0.0,
        help="seconds the blackout lasts: no reconnect attempts, then each charger "
        "reconnects by its back-off",
    )
    add(
        "--reboot-delay",
        type=float,
        default=8.0,
        help="seconds a station stays away after a Reset or a firmware installation before "
        "it reconnects, give or take a quarter (default 8; 0: at once)",
    )
    add(
        "--offline-replay-rate",
        type=float,
        default=20.0,
        help="queued transaction messages a station replays per second",
    )
    heading("idTokens")
    add(
        "--id-tokens",
        type=int,
        default=0,
        help="size of the idToken pool (default: one per charger; with --id-token-file, "
        "its first N tokens)",
    )
    add(
        "--id-token-file",
        default="",
        help="the run's idTokens, one a line: VALUE or VALUE,TYPE (# comments); "
        "default: generated tokens valid for --id-token-type",
    )
    add(
        "--id-token-type",
        default="",
        help="IdTokenEnumType of tokens without one, and of generated tokens: ISO14443 "
        "(default), ISO15693, eMAID, KeyCode, Local, Central, MacAddress (1.6 sends no type); "
        "a run offering only 2.1 may use any other type of 1 to 20 characters (VIN)",
    )
    heading("Coordination across processes")
    add(
        "--redis-url",
        default="",
        help="Redis for coordination; required with --master/--worker/--processes",
    )
    add(
        "--lease-ttl",
        type=float,
        default=30.0,
        help="seconds until a dead worker's charger ids and idTokens are free again "
        "(leases are renewed every third of it; default 30)",
    )
    heading("Checks and security profiles")
    add(
        "--ocpp-validate",
        action="store_true",
        default=False,
        help="check every message against the OCPP JSON schemas (costs CPU)",
    )
    add("--ca-bundle", default="", help="wss://: CA bundle for the CSMS's certificate (profile 2)")
    add("--client-cert", default="", help="wss://: the stations' certificate, PEM (profile 3)")
    add("--client-key", default="", help="its key, if not in --client-cert")
    add(
        "--ocpp-password",
        default="",
        is_secret=True,
        help="Basic-auth password for chargers without one in the fleet "
        "(or $OCPP_BASIC_AUTH_PASSWORD)",
    )
    heading("After the run: reconciliation and reports")
    add(
        "--csms-api",
        default="",
        help="csms_stub's HTTP API: at the end, reconcile the run's ledger with what the "
        "CSMS stored (exit code 1 on any loss)",
    )
    add(
        "--reconcile-db-url",
        default="",
        is_secret=True,
        help="instead of --csms-api: the CSMS's database (SQLAlchemy URL), read at the end "
        "to reconcile; csms_stub's tables, or another CSMS's with --reconcile-mapping",
    )
    add(
        "--reconcile-mapping",
        default="",
        help="TOML file: the query or table/columns of the CSMS's database that give charger "
        "id, transaction id, energy, start and stop (docs/testing-your-csms.md)",
    )
    add(
        "--report-dir",
        default="",
        help="write a JSON and a self-contained HTML report here at the end of every run",
    )
    heading("Capacity search")
    # the capacity search: a load shape instead of --users
    add(
        "--capacity-search",
        nargs="?",
        const="both",
        default="",
        help="find the CSMS's capacities within the SLOs (replaces --users): both (the bare "
        "flag), chargers (the most held at once: step up from --capacity-start, hold, judge, "
        "bisect) or connect-rate (new chargers/s connected and booted: step the rate up from "
        "--connect-rate-start with fresh chargers, bisect)",
    )
    add(
        "--connect-rate-start",
        type=float,
        default=5.0,
        help="connect-rate search: the first rate offered, chargers/s, doubled while the "
        "CSMS keeps pace (5)",
    )
    add(
        "--connect-rate-max",
        type=float,
        default=10_000.0,
        help="connect-rate search: stop doubling here, chargers/s (10000)",
    )
    add(
        "--connect-rate-step-chargers",
        type=int,
        default=0,
        help="connect-rate search: fresh chargers per rate step; keep it below the CSMS's "
        "connection limit (default: 10 s of arrivals, at least 20, at most --capacity-max)",
    )
    add("--capacity-start", type=int, default=100, help="chargers of the first step (100)")
    add(
        "--capacity-step",
        default="x1.5",
        help="how steps grow: a factor like x1.5 or an increment like +100 (x1.5)",
    )
    add(
        "--capacity-max",
        type=int,
        default=0,
        help="stop stepping up here (default: the fleet's size)",
    )
    add(
        "--capacity-hold",
        type=float,
        default=60.0,
        help="seconds to hold each step once its chargers are connected; extended to one "
        "full heartbeat / meter cycle when that is longer (60)",
    )
    add(
        "--capacity-resolution",
        default="5%",
        help="bisect until the last good and first bad step are this close: chargers (10) "
        "or a share of the answer, with a percent sign (default: 5 percent)",
    )
    add(
        "--capacity-linger",
        type=float,
        default=15.0,
        help="seconds to keep serving /metrics after the search, so Prometheus scrapes the "
        "answer (15)",
    )
    heading("SLOs (judge the capacity search's steps, and plain runs with --check-slo)")
    add(
        "--slo-p95-ms",
        default="1000",
        help="p95 SLO per OCPP action, ms: 1000, or with overrides: 1000,Heartbeat=500,"
        "BootNotification=3000 (none: no latency SLO)",
    )
    add(
        "--slo-boot-p95-ms",
        type=float,
        default=10_000.0,
        help="connect SLO: p95 of the BootNotifications while a step's chargers arrive, ms; "
        "a ramp over it is an admission limit, not a concurrency failure (10000; 0: none)",
    )
    add(
        "--slo-error-ratio",
        type=float,
        default=0.01,
        help="most CALLs not answered with a CALLRESULT, as a share (0.01)",
    )
    add(
        "--slo-connect-failure-ratio",
        type=float,
        default=0.01,
        help="most failed connection attempts (and chargers not connected), as a share (0.01)",
    )
    add(
        "--slo-disconnect-ratio",
        type=float,
        default=0.01,
        help="most connections the CSMS closes or loses during a hold, per charger (0.01)",
    )
    add(
        "--capacity-max-lag-ms",
        type=float,
        default=100.0,
        help="saturation guard: the load generator's timer lag p99 (worst worker), ms (100)",
    )
    add(
        "--capacity-max-cpu",
        type=float,
        default=0.9,
        help="saturation guard: CPU of the busiest load-generator process, 1 = a core (0.9)",
    )
    add(
        "--check-slo",
        action="store_true",
        default=False,
        help="judge a plain run by the SLOs above when it ends: one line per SLO, exit code "
        "0 when all held, 1 otherwise (the verdict, not Locust's failure count, decides)",
    )
    add(
        "--junit",
        default="",
        help="write the verdicts as JUnit XML to this file: a test case per SLO "
        "(--check-slo) or per capacity answer (--capacity-search)",
    )
    heading("Metrics")
    add(
        "--prometheus-port",
        type=int,
        default=9646,
        help="serve /metrics here (the master's merges every worker's); 0 turns it off",
    )


@dataclass(frozen=True)
class OptionHelp:
    """One of our options as ``python -m loadgen options`` shows it."""

    heading: str
    flags: tuple[str, ...]
    help: str
    default: Any = None
    #: what the value looks like: "N", "X", "TEXT", "[TEXT]" (optional), "" (a flag)
    metavar: str = "TEXT"
    secret: bool = False

    @property
    def name(self) -> str:
        """The ``options`` attribute (``--fleet-size``: ``fleet_size``)."""
        return self.flags[0].lstrip("-").replace("-", "_")


def option_help() -> list[OptionHelp]:
    """Every option of :func:`add_arguments` with its heading and help, in order: the one
    definition the listing (and the web UI's help texts) come from."""
    found: list[OptionHelp] = []
    heading = ""

    class _Recorder:
        def add_heading(self, title: str) -> None:
            nonlocal heading
            heading = title

        def add_argument(self, *flags: str, **kwargs: Any) -> None:
            found.append(
                OptionHelp(
                    heading,
                    flags,
                    # argparse formats help with %: "%%" is a percent sign
                    str(kwargs.get("help", "")).replace("%%", "%"),
                    kwargs.get("default"),
                    metavar=_metavar(kwargs),
                    secret=bool(kwargs.get("is_secret")),
                )
            )

    add_arguments(_Recorder())
    return found


def _metavar(kwargs: dict[str, Any]) -> str:
    if kwargs.get("action") == "store_true":
        return ""
    kind = {int: "N", float: "X"}.get(kwargs.get("type", str), "TEXT")
    return f"[{kind}]" if kwargs.get("nargs") == "?" else kind


def option_names() -> list[str]:
    """The ``options`` attribute of each of our options, in the order they are added."""
    return [option.name for option in option_help()]


def settings_from_options(options: Any) -> Settings:
    host = (options.host or "").strip()
    if not host.startswith(("ws://", "wss://")):
        raise SettingsError(f"--host must be the CSMS's ws:// or wss:// URL, not {host!r}")
    try:
        versions = parse_versions(options.ocpp_version)
    except ValueError as exc:
        raise SettingsError(f"--ocpp-version: {exc}") from None
    version = versions[0]
    connector_status = getattr(options, "connector_status", "") or None
    if connector_status not in (None, *CONNECTOR_STATUS_MESSAGES):
        raise SettingsError(
            f"--connector-status must be {' or '.join(CONNECTOR_STATUS_MESSAGES)}, "
            f"not {connector_status!r}"
        )
    positive = {
        "--time-scale": options.time_scale,
        "--meter-interval": options.meter_interval,
        "--call-timeout": options.call_timeout,
        "--connect-timeout": options.connect_timeout,
        "--reconnect-cap": options.reconnect_cap,
        "--offline-replay-rate": options.offline_replay_rate,
        "--session-interarrival": options.session_interarrival,
        "--session-stay": options.session_stay,
        "--lease-ttl": options.lease_ttl,
    }
    for name, value in positive.items():
        if not value > 0:
            raise SettingsError(f"{name} must be positive, not {value}")
    if not 0 <= options.prometheus_port <= 65535:
        raise SettingsError(f"--prometheus-port must be 0 to 65535, not {options.prometheus_port}")
    for name, value in (
        ("--heartbeat-interval", options.heartbeat_interval),
        ("--reconnect-tries", options.reconnect_tries),
        ("--retry-backoff-wait-minimum", options.retry_backoff_wait_minimum),
        ("--retry-backoff-random-range", options.retry_backoff_random_range),
        ("--retry-backoff-repeat-times", options.retry_backoff_repeat_times),
        ("--blackout-at", options.blackout_at),
        ("--blackout-for", options.blackout_for),
        ("--id-tokens", options.id_tokens),
        ("--reboot-delay", options.reboot_delay),
    ):
        if not 0 <= value < float("inf"):  # also refuses NaN
            raise SettingsError(f"{name} must not be negative, not {value}")
    pattern = getattr(options, "charger_id_pattern", "") or None
    if pattern and options.fleet:
        raise SettingsError("--charger-id-pattern names a generated fleet, not --fleet's chargers")
    try:
        fleet = (
            fleets.load(options.fleet)
            if options.fleet
            else fleets.generate(options.fleet_size, pattern=pattern)
        )
        profile = parse_profile(options.ocpp_profile)
    except (fleets.FleetError, ProfileError) as exc:
        message = str(exc)
        if message.startswith("charger id pattern "):  # generate() names it; we say the option
            message = "--charger-id-pattern " + message.removeprefix("charger id pattern ")
        raise SettingsError(message) from None
    ssl_context = None
    if host.startswith("wss://") or options.ca_bundle or options.client_cert:
        try:
            ssl_context = tls_context(
                options.ca_bundle or None, options.client_cert or None, options.client_key or None
            )
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"TLS settings: {exc}") from None
    capacity = _capacity_config(options, len(fleet.chargers))
    slo = _slo_check(options, capacity, len(fleet.chargers))
    junit = getattr(options, "junit", "") or None
    if junit and not os.path.isdir(os.path.dirname(os.path.abspath(junit))):
        raise SettingsError(f"--junit {junit}: no such directory")
    tokens: dict[str, list[str]] = {}
    for offered in versions:  # a token must suit whichever version the CSMS picks
        tokens = _id_tokens(options, offered, fleet)
    mapping = _reconcile_source(options)
    return Settings(
        host=host.rstrip("/"),
        version=version,
        versions=versions,
        fleet=fleet,
        profile=profile,
        session_plan=SessionPlan(options.session_interarrival, options.session_stay),
        time_scale=options.time_scale,
        heartbeat_interval=options.heartbeat_interval or None,
        meter_interval=options.meter_interval,
        call_timeout=options.call_timeout,
        connect_timeout=options.connect_timeout,
        redis_url=options.redis_url or None,
        validate=bool(options.ocpp_validate),
        reconnect_cap=options.reconnect_cap,
        reconnect_tries=options.reconnect_tries or None,
        offline_replay_rate=options.offline_replay_rate,
        tokens=tokens,
        csms_api=options.csms_api.rstrip("/") or None,
        reconcile_db_url=options.reconcile_db_url or None,
        reconcile_mapping=mapping,
        prometheus_port=options.prometheus_port,
        lease_ttl=options.lease_ttl,
        ssl_context=ssl_context,
        capacity=capacity,
        capacity_spawn_rate=float(getattr(options, "spawn_rate", None) or 100.0),
        capacity_spawn_rate_pinned=getattr(options, "spawn_rate", None) is not None,
        capacity_linger=options.capacity_linger,
        report_dir=options.report_dir or None,
        retry_backoff=backoff.RetryBackOff(
            wait_minimum=options.retry_backoff_wait_minimum,
            random_range=options.retry_backoff_random_range,
            repeat_times=options.retry_backoff_repeat_times,
            cap=options.reconnect_cap,
            max_tries=options.reconnect_tries or None,
        ),
        blackout=_blackout(options.blackout_at, options.blackout_for),
        reboot_delay=options.reboot_delay,
        password=options.ocpp_password or os.environ.get("OCPP_BASIC_AUTH_PASSWORD") or None,
        slo=slo,
        junit=junit,
        connector_status=connector_status,
    )


def parse_versions(text: str) -> tuple[Version, ...]:
    """The versions of ``--ocpp-version`` ("2.1" or "2.1,2.0.1"), in order; ValueError names
    the first one unknown or repeated."""
    versions: list[Version] = []
    for name in text.split(","):
        version = get_version(name.strip())
        if version in versions:
            raise ValueError(f"{version.name} is listed twice")
        versions.append(version)
    return tuple(versions)


def _reconcile_source(options: Any) -> Any:
    """The loaded ``--reconcile-mapping`` (None without one), after checking that the
    reconciliation options go together."""
    if options.csms_api and options.reconcile_db_url:
        raise SettingsError("--csms-api and --reconcile-db-url: give one CSMS source, not both")
    if not options.reconcile_mapping:
        return None
    if not options.reconcile_db_url:
        raise SettingsError("--reconcile-mapping reads a database: give --reconcile-db-url")
    from loadgen.reconcile import Mapping, MappingError  # sqlalchemy: only when asked for

    try:
        return Mapping.load(options.reconcile_mapping)
    except MappingError as exc:
        raise SettingsError(str(exc)) from None


def _id_tokens(options: Any, version: Version, fleet: fleets.Fleet) -> dict[str, list[str]]:
    """The run's idTokens by group: the fleet's, and the run's pool (``--id-token-file`` or
    generated), checked for the version and their types; SettingsError names the first
    problem and where it is."""
    token_type = getattr(options, "id_token_type", "") or None
    token_file = getattr(options, "id_token_file", "") or None
    try:
        if token_type is not None:
            token_type = idtokens.normalise_type(token_type)
            problem = idtokens.type_problem(token_type, version.name)
            if problem is not None:
                raise idtokens.IdTokenError(problem)
    except idtokens.IdTokenError as exc:
        raise SettingsError(f"--id-token-type: {exc}") from None
    try:
        if token_file:
            pool = idtokens.load_file(token_file)
            if options.id_tokens > len(pool):
                raise SettingsError(
                    f"--id-tokens {options.id_tokens}: {token_file} holds only {len(pool)}"
                )
            pool = pool[: options.id_tokens or None]
        else:
            # 1.6 sends no type; its generated idTags look like ISO14443 card UIDs
            pool = idtokens.generate(
                options.id_tokens or len(fleet.chargers), token_type or idtokens.DEFAULT_TYPE
            )
        groups = {"": pool, **fleet.id_tokens}
        checked = idtokens.check(
            [token for group in groups.values() for token in group], version.name, token_type
        )
    except idtokens.IdTokenError as exc:
        raise SettingsError(f"idTokens: {exc}") from None
    result: dict[str, list[str]] = {}
    position = iter(checked)
    for group, items in groups.items():
        result[group] = [next(position).item() for _ in items]
    return result


def _blackout(at: float, duration: float) -> tuple[float, float] | None:
    """``--blackout-at`` / ``--blackout-for``: both or neither."""
    if not at and not duration:
        return None
    if not (at > 0 and duration > 0):
        raise SettingsError("--blackout-at and --blackout-for go together, both positive")
    return (at, duration)


def search_mode(value: Any) -> str | None:
    """What ``--capacity-search`` asks for: None (not given), both, chargers or
    connect-rate. The environment variable may also say true/false, as for a flag."""
    text = str(value if value is not None else "").strip().lower()
    if text in ("", "false", "0", "no", "off"):
        return None
    if text in ("true", "1", "yes", "on"):
        return "both"
    return text


def _capacity_config(options: Any, fleet_size: int) -> CapacityConfig | None:
    mode = search_mode(options.capacity_search)
    if mode is None:
        return None
    resolution_text = str(options.capacity_resolution).strip()
    try:
        if resolution_text.endswith("%"):
            resolution, ratio = 1, float(resolution_text[:-1]) / 100
        else:
            resolution, ratio = int(resolution_text), 0.0
    except ValueError:
        raise SettingsError(
            f"--capacity-resolution {resolution_text!r}: write chargers (10) or a share (5%)"
        ) from None
    maximum = options.capacity_max or fleet_size
    if maximum > fleet_size:
        raise SettingsError(
            f"--capacity-max {maximum} is more than the fleet's {fleet_size} chargers "
            "(raise --fleet-size or use a larger --fleet)"
        )
    if options.capacity_linger < 0:
        raise SettingsError(
            f"--capacity-linger must not be negative, not {options.capacity_linger}"
        )
    spawn_rate = getattr(options, "spawn_rate", None)
    if spawn_rate is not None and not spawn_rate > 0:
        raise SettingsError(f"--spawn-rate must be positive, not {spawn_rate}")
    try:
        return CapacityConfig(
            start=options.capacity_start,
            step=options.capacity_step,
            max_chargers=maximum,
            hold_seconds=options.capacity_hold,
            **_slos(options),
            resolution=resolution,
            resolution_ratio=ratio,
            mode=mode,
            rate_start=options.connect_rate_start,
            rate_max=options.connect_rate_max,
            rate_step_chargers=options.connect_rate_step_chargers,
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _slos(options: Any) -> dict[str, Any]:
    """The ``--slo-*`` options and the load generator's guards, as CapacityConfig fields."""
    p95_ms, overrides = parse_p95_slo(options.slo_p95_ms, known_actions())
    return {
        "p95_ms": p95_ms,
        "p95_ms_by_action": overrides,
        "boot_p95_ms": options.slo_boot_p95_ms or None,
        "max_call_error_ratio": options.slo_error_ratio,
        "max_connect_failure_ratio": options.slo_connect_failure_ratio,
        "max_disconnect_ratio": options.slo_disconnect_ratio,
        "max_schedule_lag_p99_ms": options.capacity_max_lag_ms or None,
        "max_generator_cpu": options.capacity_max_cpu or None,
    }


def _slo_check(
    options: Any, capacity: CapacityConfig | None, fleet_size: int
) -> CapacityConfig | None:
    """``--check-slo``'s SLOs for a plain run (None without it); ``--junit`` needs a
    verdict to write, from it or from the capacity search."""
    check = bool(getattr(options, "check_slo", False))
    if capacity is not None:
        if check:
            raise SettingsError(
                "--check-slo judges a plain run; --capacity-search judges its steps by the "
                "same SLOs already: give one"
            )
        return None
    if getattr(options, "junit", "") and not check:
        raise SettingsError(
            "--junit writes the verdicts of --check-slo or --capacity-search: give one of them"
        )
    if not check:
        return None
    try:
        # a plain run is one "step" of its --users: the search's own fields do not apply
        return CapacityConfig(start=1, max_chargers=max(1, fleet_size), **_slos(options))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
