"""docker-compose.yml, the Dockerfile, prometheus/ and grafana/ checked against the project.

No Docker engine here, so the stack cannot run: these tests parse the files and check every
service command against the real command-line parsers (``python -m csms_stub --help``,
Locust's parser with the locustfile's options), every published port against the design's,
every mounted path, the Prometheus targets and the Grafana datasources. ``docker-compose
config`` and ``promtool check config`` run when those binaries are installed (Debian
packages ``docker-compose`` and ``prometheus``).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from loadgen import fleet as fleets

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS_FILE = REPO / "prometheus" / "prometheus.yml"
DATASOURCES_FILE = REPO / "grafana" / "provisioning" / "datasources" / "datasources.yml"
DASHBOARDS_FILE = REPO / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
DOCKERFILE = REPO / "Dockerfile"

#: Host ports each service publishes: DESIGN's (OCPP 9000, stub API 8080, Locust UI 8089,
#: master metrics 9646, Prometheus 9090, Grafana 3000), plus the two that workers on other
#: hosts need (Locust's master port 5557, Redis 6379), bound to 127.0.0.1 unless EXPOSE_ADDR.
PUBLISHED = {
    "csms-stub": {9000, 8080},
    "locust-master": {8089, 9646, 5557},
    "prometheus": {9090},
    "grafana": {3000},
    "redis": {6379},
}
REMOTE_ONLY = {5557, 6379}
ALL_SERVICES = set(PUBLISHED) | {"postgres", "locust-worker"}
PROJECT_SERVICES = {"csms-stub", "locust-master", "locust-worker"}

_VAR = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")
_PORT = re.compile(r"^(?:(?P<ip>.+):)?(?P<host>\d+):(?P<container>\d+)(?:/(?:tcp|udp))?$")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with the defaults (the environment is not consulted)."""
    return _VAR.sub(lambda m: m.group("default") or "", value)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    args = shlex.split(cmd) if isinstance(cmd, str) else [str(arg) for arg in cmd]
    return [interpolate(arg) for arg in args]


def options_used(argv: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("-")]


def option_value(argv: list[str], *names: str, default: str | None = None) -> str | None:
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in names:
            return value if eq else argv[i + 1]
    return default


def published(service: dict[str, Any]) -> list[tuple[str | None, int, int]]:
    """(host ip, host port, container port) for each ``ports`` entry."""
    out = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out.append((entry.get("host_ip"), int(entry["published"]), int(entry["target"])))
            continue
        match = _PORT.match(str(entry))
        assert match, f"unparsed port entry {entry!r} (give host:container explicitly)"
        ip = match.group("ip")
        out.append((interpolate(ip) if ip else None, int(match["host"]), int(match["container"])))
    return out


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) for each volume; source is a host path (./…) or a named volume."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            out.append((entry["source"], entry["target"]))
        else:
            source, target = interpolate(entry).split(":")[:2]
            out.append((source, target))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


# -- the real command-line parsers ---------------------------------------------------------


@pytest.fixture(scope="module")
def stub_help() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "csms_stub", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def locust_help() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "locustfile.py", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# Locust's --help is printed before the locustfile is imported, so the project's own options
# (--redis-url, --csms-api, --prometheus-port, ...) are not in it: build Locust's parser the
# way `locust -f locustfile.py` does (the locustfile's init_command_line_parser listener
# adds them), list its options and parse each service's command with it.
_LOCUST_PARSE = r"""
import contextlib, io, json, sys
import locustfile  # registers the project's options
from locust.argument_parser import get_parser

argvs = json.load(sys.stdin)
parser = get_parser()
options = sorted(s for action in parser._actions for s in action.option_strings)
env_vars = sorted(a.env_var for a in parser._actions if getattr(a, "env_var", None))
errors = []
for argv in argvs:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            get_parser().parse_args(argv)
        errors.append("")
    except SystemExit:
        errors.append(err.getvalue().strip() or "parse error")
json.dump({"options": options, "env_vars": env_vars, "errors": errors}, sys.stdout)
"""


def locust_parse(argvs: list[list[str]]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _LOCUST_PARSE],
        cwd=REPO,
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def in_help(option: str, help_text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text) is not None


# -- services and commands -----------------------------------------------------------------


def test_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == ALL_SERVICES
    for name in PROJECT_SERVICES:
        assert services[name].get("build") == ".", f"{name} must use the project's Dockerfile"
        assert services[name].get("image") == services["csms-stub"]["image"], name


def test_stub_command(services: dict[str, dict[str, Any]], stub_help: str) -> None:
    from csms_stub.__main__ import build_parser

    stub = services["csms-stub"]
    argv = command(stub)
    assert argv[:3] == ["python", "-m", "csms_stub"]
    for option in options_used(argv[3:]):
        assert in_help(option, stub_help), f"csms_stub has no option {option}"
    options = build_parser().parse_args(argv[3:])
    assert (options.port, options.api_port) == (9000, 8080)
    # On PostgreSQL: DATABASE_URL names the postgres service, its user and database.
    url = urlsplit(stub["environment"]["DATABASE_URL"])
    pg = services["postgres"]["environment"]
    assert url.scheme.startswith("postgresql")
    assert (url.hostname, url.port or 5432) == ("postgres", 5432)
    assert url.username == pg["POSTGRES_USER"]
    assert url.password == pg["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == pg["POSTGRES_DB"]


def test_locust_commands(services: dict[str, dict[str, Any]], locust_help: str) -> None:
    names = ["locust-master", "locust-worker"]
    argvs = [command(services[name]) for name in names]
    for name, argv in zip(names, argvs, strict=True):
        assert argv[0] == "locust", name
        locustfile = option_value(argv, "-f", "--locustfile")
        assert locustfile and (REPO / locustfile).is_file(), f"{name}: -f {locustfile}"
    result = locust_parse([argv[1:] for argv in argvs])
    known = set(result["options"])
    assert {"--redis-url", "--csms-api", "--prometheus-port"} <= known, "project options"
    for name, argv, error in zip(names, argvs, result["errors"], strict=True):
        for option in options_used(argv[1:]):
            assert option in known, f"{name}: locust has no option {option}"
            if option in {"-f", "--master", "--worker", "--master-host", "--web-port"}:
                assert in_help(option, locust_help), option
        assert not error, f"{name}: {error}"

    master, worker = argvs
    assert "--master" in master
    assert "--worker" in worker
    assert option_value(master, "--redis-url") == "redis://redis:6379/0"
    assert option_value(worker, "--redis-url") == option_value(master, "--redis-url")
    assert option_value(worker, "--master-host") == "locust-master"
    assert option_value(master, "--web-port", "-P", default="8089") == "8089"
    assert option_value(master, "--prometheus-port", default="9646") == "9646"
    # The master's targets are compose services on the ports they listen on.
    stub_argv = command(services["csms-stub"])
    host = urlsplit(option_value(master, "--host", "-H") or "")
    assert (host.scheme, host.hostname) == ("ws", "csms-stub")
    assert str(host.port) == option_value(stub_argv, "--port", default="9000")
    api = urlsplit(option_value(master, "--csms-api") or "")
    assert (api.scheme, api.hostname) == ("http", "csms-stub")
    assert str(api.port) == option_value(stub_argv, "--api-port", default="8080")
    redis = urlsplit(option_value(master, "--redis-url") or "")
    assert (redis.hostname, redis.port) == ("redis", 6379)


def test_the_master_passes_through_option_variables(
    services: dict[str, dict[str, Any]],
) -> None:
    """Each LOCUST_* variable the master takes from the host is one its parser reads."""
    environment = services["locust-master"].get("environment") or []
    passed = [entry.split("=", 1)[0] for entry in environment if entry.startswith("LOCUST_")]
    assert "LOCUST_CAPACITY_SEARCH" in passed
    readable = set(locust_parse([])["env_vars"])
    assert [name for name in passed if name not in readable] == []


def test_one_fleet_file_for_the_stub_and_locust(services: dict[str, dict[str, Any]]) -> None:
    """The stub preloads the chargers Locust simulates, so charger_info has every charger's
    site and coordinates (the fleet map); a file in the image, big enough for a load test."""
    paths = {
        name: option_value(command(services[name]), "--fleet")
        for name in ("csms-stub", "locust-master", "locust-worker")
    }
    assert len(set(paths.values())) == 1 and None not in paths.values(), paths
    path = paths["csms-stub"]
    assert path is not None
    source = source_in_image(path)
    assert source is not None, f"{path} is not a file the Dockerfile copies into the image"
    fleet = fleets.load(source)
    assert len(fleet.chargers) == 10_000  # Locust's default --fleet-size
    assert fleet.sites == fleets.generate(1).sites  # every site with its coordinates
    assert all(charger.site_id in fleet.sites for charger in fleet.chargers.values())


def test_worker_scales(services: dict[str, dict[str, Any]]) -> None:
    worker = services["locust-worker"]
    assert "container_name" not in worker, "a fixed name stops --scale locust-worker=N"
    assert "ports" not in worker, "host ports stop --scale locust-worker=N"
    for name, service in services.items():
        if name != "locust-worker":
            assert "container_name" not in service or service["container_name"] != name


# -- ports ---------------------------------------------------------------------------------


def listening_ports(name: str, service: dict[str, Any]) -> set[int]:
    """The ports a service listens on inside the network (from its command or defaults)."""
    argv = command(service)
    if name == "csms-stub":
        return {
            int(option_value(argv, "--port", default="9000") or 0),
            int(option_value(argv, "--api-port", default="8080") or 0),
        }
    if name == "locust-master":
        return {
            int(option_value(argv, "--web-port", "-P", default="8089") or 0),
            int(option_value(argv, "--prometheus-port", default="9646") or 0),
            int(option_value(argv, "--master-bind-port", default="5557") or 0),
        }
    defaults = {"redis": {6379}, "postgres": {5432}, "prometheus": {9090}, "grafana": {3000}}
    return defaults.get(name, set())


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        ports = published(service)
        assert {host for _, host, _ in ports} == PUBLISHED.get(name, set()), name
        for ip, host, container in ports:
            assert host == container, f"{name}: {host}:{container}"
            assert container in listening_ports(name, service), f"{name} listens on {container}"
            if host in REMOTE_ONLY:
                assert ip == "127.0.0.1", f"{name}:{host} only on 127.0.0.1 unless EXPOSE_ADDR"
            else:
                assert ip is None, f"{name}:{host}"


# -- health checks and start order ---------------------------------------------------------


def test_healthchecks_and_depends_on(services: dict[str, dict[str, Any]]) -> None:
    for name in ("redis", "postgres", "csms-stub", "locust-master", "prometheus", "grafana"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    stub_check = " ".join(services["csms-stub"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8080/healthz" in stub_check
    for name, service in services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            depends = {dep: {"condition": "service_started"} for dep in depends}
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s healthcheck"
    assert services["csms-stub"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "redis" in services["locust-master"]["depends_on"]
    assert "locust-master" in services["locust-worker"]["depends_on"]


# -- mounted paths -------------------------------------------------------------------------


def test_mounts_exist(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in services.items():
        for source, _ in mounts(service):
            if is_bind(source):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
    prometheus = dict((t, s) for s, t in mounts(services["prometheus"]))
    config = option_value(command(services["prometheus"]), "--config.file")
    assert config and prometheus.get(config) == "./prometheus/prometheus.yml"
    grafana = dict((t, s) for s, t in mounts(services["grafana"]))
    assert grafana.get("/etc/grafana/provisioning") == "./grafana/provisioning"
    provider_paths = [p["options"]["path"] for p in load_yaml(DASHBOARDS_FILE)["providers"]]
    for path in provider_paths:
        assert grafana.get(path) == "./grafana/dashboards", path


# -- prometheus ----------------------------------------------------------------------------


def test_prometheus_targets(services: dict[str, dict[str, Any]]) -> None:
    config = load_yaml(PROMETHEUS_FILE)
    assert config["global"]["scrape_interval"] == "5s"
    targets: dict[str, str] = {}
    for job in config["scrape_configs"]:
        assert job.get("scrape_interval", "5s") == "5s", job["job_name"]
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in services, f"{target}: {host} is not a compose service"
                assert int(port) in listening_ports(host, services[host]), target
                targets[target] = job.get("metrics_path", "/metrics")
    assert targets == {"locust-master:9646": "/metrics", "csms-stub:8080": "/metrics"}


def test_promtool_check_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    done = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- grafana -------------------------------------------------------------------------------


def test_grafana_datasources(services: dict[str, dict[str, Any]]) -> None:
    sources = {ds["uid"]: ds for ds in load_yaml(DATASOURCES_FILE)["datasources"]}
    assert set(sources) == {"prometheus", "postgres"}
    prom = sources["prometheus"]
    assert prom["type"] == "prometheus"
    url = urlsplit(prom["url"])
    assert (url.hostname, url.port) == ("prometheus", 9090)
    pg = sources["postgres"]
    assert pg["type"] in {"postgres", "grafana-postgresql-datasource"}
    host, port = pg["url"].rsplit(":", 1)
    assert host in services and int(port) in listening_ports(host, services[host])
    env = services[host]["environment"]
    assert pg["user"] == env["POSTGRES_USER"]
    assert pg["jsonData"]["database"] == env["POSTGRES_DB"]
    assert pg["secureJsonData"]["password"] == env["POSTGRES_PASSWORD"]


def test_dashboards_provider() -> None:
    (provider,) = load_yaml(DASHBOARDS_FILE)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert (REPO / "grafana" / "dashboards").is_dir()


# -- Dockerfile ----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def source_in_image(container_path: str) -> Path | None:
    """The repository file the Dockerfile's COPY puts at ``container_path``, if any."""
    workdir = PurePosixPath("/")
    found = None
    target = PurePosixPath(container_path)
    for keyword, rest in dockerfile_instructions():
        if keyword == "WORKDIR":
            workdir = workdir / rest
        elif keyword == "COPY":
            *sources, dest = [arg for arg in shlex.split(rest) if not arg.startswith("--")]
            for source in sources:
                copied = workdir / dest
                if not (REPO / source).is_dir():
                    copied = copied / PurePosixPath(source).name if dest.endswith("/") else copied
                    if copied == target:
                        found = REPO / source
                elif target.is_relative_to(copied):
                    candidate = REPO / source / target.relative_to(copied)
                    if candidate.is_file():
                        found = candidate
    return found


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copied: list[str] = []
    for keyword, rest in instructions:
        if keyword in {"COPY", "ADD"}:
            args = [arg for arg in shlex.split(rest) if not arg.startswith("--")]
            for source in args[:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
                copied.append(str(PurePosixPath(source)))
    # What `pip install .` and `locust -f locustfile.py` need.
    for needed in ("pyproject.toml", "README.md", "loadgen", "csms_stub", "locustfile.py"):
        assert needed in copied, f"Dockerfile does not copy {needed}"
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs), "pip install the project"
    assert "[dev]" not in runs, "no dev dependencies in the image"
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the image runs as a non-root user"
    workdir = [rest for keyword, rest in instructions if keyword == "WORKDIR"][-1]
    assert workdir == "/app"


# -- docker-compose itself -----------------------------------------------------------------


def test_docker_compose_config() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (Debian package docker-compose)")
    done = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
