"""The Grafana dashboards (grafana/dashboards/*.json), statically and against a real run.

Static: the JSON is what grafana/build_dashboards.py builds; it parses; every datasource is
one the provisioning defines; every ``$variable`` is defined; every load-generator selector
filters on ``$job`` and ``$run``; every metric and label a query names is one the load
generator (loadgen.metrics.SPECS) or the stub (csms_stub.metrics) exports; every PromQL
expression parses (``promtool check rules``).

Live: a real csms_stub on the machine's PostgreSQL (a fresh schema) and a real headless
``locust`` capacity search (10, then 20 chargers of a 30-charger fleet file that the stub
loads too, so charger_info knows the sites; offering OCPP 2.1 and 2.0.1, of which the stub
picks 2.1), scraped every second by a real ``prometheus``.
The stub answers 2 % of the CALLs with a CALLERROR (``--error-ratio``), within the run's
CALL error SLO (``--slo-error-ratio 0.2``), so the CALLERROR panels have data too.
After the answer, while the run lingers, the test makes what the error panels show happen:
the CSMS starts transactions remotely, a second connection takes a charger's id, the stub is
paused past the chargers' CALL timeout (timeouts, then late replies) and restarted
(disconnects, refused connects, reconnects, the offline queue). Then every Prometheus query
of every panel runs through the HTTP API with the variables substituted and must return data,
and every SQL query runs against the stub's schema and must return rows.

Everything listens on 127.0.0.1; every process started here is stopped at the end.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.sync.client import connect as ws_connect
from websockets.typing import Subprotocol

from csms_stub.metrics import StubMetrics
from loadgen import fleet as fleets
from loadgen.metrics import SPECS
from tests.conftest import (
    POSTGRES_URL,
    Database,
    StubProcess,
    free_port,
    start_stub_process,
    terminate,
)
from tests.test_locust import FAST, Background, get, run_id_of, wait_for

pytestmark = pytest.mark.seconds(45)  # conftest.py: the start order

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = REPO / "grafana" / "dashboards"
BUILDER = REPO / "grafana" / "build_dashboards.py"
DATASOURCES_FILE = REPO / "grafana" / "provisioning" / "datasources" / "datasources.yml"
PROMETHEUS_FILE = REPO / "prometheus" / "prometheus.yml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

#: Grafana's own variables a query may use
BUILTINS = {
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__dashboard",
}
#: the values the live test gives Grafana's built-ins (scrapes every second)
RATE_INTERVAL = "5s"
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::[\w-]+)?\}|(\w+)|\[\[(\w+)\]\])")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"(\b(?:ocpp_loadgen|csms_stub)_\w+)(\{[^}]*\})?")


# -- reading the dashboards ----------------------------------------------------------------


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


def panels_of(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def targets_of(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels_of(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def promql_targets() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        (name, panel, target)
        for name, dashboard in load_dashboards().items()
        for panel, target in targets_of(dashboard)
        if "expr" in target
    ]


def sql_targets() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        (name, panel, target)
        for name, dashboard in load_dashboards().items()
        for panel, target in targets_of(dashboard)
        if "rawSql" in target
    ]


def variables_of(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in dashboard.get("templating", {}).get("list", [])}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    return query.get("query", "") if isinstance(query, dict) else str(query or "")


def used_variables(text: str) -> set[str]:
    return {next(group for group in match.groups() if group) for match in _VARIABLE.finditer(text)}


def substitute(text: str, values: dict[str, str]) -> str:
    """Grafana's interpolation, for the variables and built-ins in ``values``."""

    def one(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values[name]

    return _VARIABLE.sub(one, text)


def label(panel: dict[str, Any], target: dict[str, Any]) -> str:
    return f"{panel.get('title')!r} {target.get('refId')}"


# -- what the load generator and the stub export ------------------------------------------


def exported_series() -> dict[str, set[str]]:
    """Every series name a query may select, with the labels it carries."""
    names: dict[str, set[str]] = {}
    sources = [(spec.name, spec.kind, {*spec.labels, "run"}) for spec in SPECS]
    for collector in vars(StubMetrics()).values():  # the stub's prometheus_client collectors
        if hasattr(collector, "_labelnames") and hasattr(collector, "_type"):
            sources.append((collector._name, collector._type, set(collector._labelnames)))
    for name, kind, labels in sources:
        labels = labels | {"job", "instance"}
        if kind == "histogram":
            names[f"{name}_bucket"] = labels | {"le"}
            names[f"{name}_count"] = labels
            names[f"{name}_sum"] = labels
        elif kind == "counter":
            names[name if name.endswith("_total") else f"{name}_total"] = labels
        else:
            names[name] = labels
    return names


# -- static checks -------------------------------------------------------------------------


def test_the_json_is_what_the_builder_builds() -> None:
    spec = importlib.util.spec_from_file_location("build_dashboards", BUILDER)
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert set(builder.DASHBOARDS) == {path.name for path in DASHBOARDS_DIR.glob("*.json")}
    for name, build in builder.DASHBOARDS.items():
        assert (DASHBOARDS_DIR / name).read_text() == builder.render(build), (
            f"{name} is out of date: run python grafana/build_dashboards.py"
        )


def test_three_dashboards_with_their_own_uids_and_stable_ids() -> None:
    dashboards = load_dashboards()
    titles = {d["title"] for d in dashboards.values()}
    assert len(dashboards) == 3, titles
    assert len({d["uid"] for d in dashboards.values()}) == 3
    kinds = {name: {p["type"] for p in panels_of(d)} for name, d in dashboards.items()}
    assert "xychart" in kinds["capacity-report.json"]
    assert "geomap" in kinds["fleet-map.json"]
    for name, dashboard in dashboards.items():
        assert dashboard["schemaVersion"] >= 36, name
        assert dashboard.get("id") is None, f"{name}: no database id in a provisioned file"
        ids = [panel["id"] for panel in panels_of(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in panels_of(dashboard):
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
            if panel["type"] != "row":
                assert panel.get("targets") or panel["type"] == "text", panel["title"]


def test_datasources_are_the_provisioned_ones() -> None:
    provisioned = {
        source["uid"]: source["type"]
        for source in yaml.safe_load(DATASOURCES_FILE.read_text())["datasources"]
    }
    assert set(provisioned) == {"prometheus", "postgres"}
    for name, dashboard in load_dashboards().items():
        refs = [variable["datasource"] for variable in variables_of(dashboard).values()]
        for panel in panels_of(dashboard):
            if panel["type"] in ("row", "text"):
                continue
            refs.append(panel["datasource"])
            refs.extend(target["datasource"] for target in panel["targets"])
            kinds = {target["datasource"]["uid"] for target in panel["targets"]}
            assert kinds == {panel["datasource"]["uid"]}, f"{name}: {panel['title']}"
            for target in panel["targets"]:
                query = (
                    "expr" if provisioned[target["datasource"]["uid"]] == "prometheus" else "rawSql"
                )
                assert target.get(query), f"{name}: {label(panel, target)} has no {query}"
        for ref in refs:
            assert ref["uid"] in provisioned, f"{name}: datasource {ref}"
            assert ref["type"] == provisioned[ref["uid"]], f"{name}: datasource {ref}"


def test_every_variable_used_is_defined() -> None:
    for name, dashboard in load_dashboards().items():
        variables = variables_of(dashboard)
        assert {"job", "run"} <= set(variables), name
        assert variable_query(variables["job"]) == (
            "label_values(ocpp_loadgen_chargers_connected, job)"
        )
        assert variable_query(variables["run"]) == (
            'label_values(ocpp_loadgen_chargers_connected{job=~"$job"}, run)'
        )
        texts = [variable_query(var) for var in variables.values()]
        texts += [t.get("expr") or t.get("rawSql") or "" for _, t in targets_of(dashboard)]
        for text in texts:
            unknown = used_variables(text) - set(variables) - BUILTINS
            assert not unknown, f"{name}: {text!r} uses undefined {unknown}"


def test_every_query_selects_exported_metrics_by_job_and_run() -> None:
    exported = exported_series()
    for name, panel, target in promql_targets():
        expr, where = target["expr"], f"{name}: {label(panel, target)}"
        selected = _SELECTOR.findall(expr)
        assert selected, f"{where}: selects no ocpp_loadgen_ / csms_stub_ series"
        labels_in_expr: set[str] = set()
        for metric, matchers in selected:
            assert metric in exported, f"{where}: {metric} is not exported"
            labels_in_expr |= exported[metric]
            if metric.startswith("ocpp_loadgen_"):
                assert 'job=~"$job"' in matchers and 'run=~"$run"' in matchers, where
            else:
                assert 'job=~"$stub_job"' in matchers, where
            for matcher in matchers.strip("{}").split(","):
                label_name = re.split(r"[=!~]", matcher.strip(), maxsplit=1)[0]
                assert label_name in exported[metric], f"{where}: {metric} has no {label_name}"
        for group in _BY.findall(expr):
            by = {part.strip() for part in group.split(",") if part.strip()}
            assert by <= labels_in_expr, f"{where}: grouped by unknown labels {by - labels_in_expr}"


def test_sql_uses_no_grafana_macros() -> None:
    queries = sql_targets()
    assert len(queries) >= 3
    for name, panel, target in queries:
        assert "$" not in target["rawSql"], f"{name}: {label(panel, target)}"
        assert target["format"] == "table"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
def test_every_promql_expression_parses(tmp_path: Path) -> None:
    """promtool parses each expression (variables substituted) as a recording rule's."""
    values = {"job": "locust", "run": "0123456789abcdef", "stub_job": "csms-stub"}
    values |= {"__rate_interval": RATE_INTERVAL, "__range": "300s", "__interval": "1s"}
    rules = [
        {"record": f"dashboard:query_{n}", "expr": substitute(target["expr"], values)}
        for n, (_, _, target) in enumerate(promql_targets())
    ]
    for n, (_, dashboard) in enumerate(load_dashboards().items()):
        for m, variable in enumerate(variables_of(dashboard).values()):
            # label_values(<selector>, label): the selector must parse on its own
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable_query(variable))
            assert inner, variable_query(variable)
            rules.append({"record": f"variable:{n}_{m}", "expr": substitute(inner[1], values)})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


# -- live: a real run scraped by a real Prometheus -------------------------------------------

#: the capacity search steps 10 -> 20 chargers of a 30-charger fleet and answers 20
CAPACITY = 20
CAPACITY_ARGS = ["--capacity-search", "chargers", "--capacity-start", "10"]
CAPACITY_ARGS += ["--capacity-step", "+10"]
CAPACITY_ARGS += ["--capacity-max", str(CAPACITY), "--capacity-hold", "5"]
# not the load generator's lag guard (tested in test_capacity_search.py): a pause of a busy
# CI machine ended this search at 10 chargers with "limited by the load generator"
CAPACITY_ARGS += ["--capacity-max-lag-ms", "1000"]
#: seconds the run goes on after the answer: the faults happen then, not during the search
LINGER = 20
FLEET_SIZE = 30
SITES = fleets.generate(1).sites  # the generated fleets' five sites
#: the share of CALLs the stub answers with CALLERROR InternalError, and the SLO on that
#: share the capacity search judges: far enough apart that the answer stays CAPACITY
STUB_ERROR_RATIO = 0.02
SLO_ERROR_RATIO = 0.2


def write_fleet(path: Path) -> Path:
    """Six chargers at each of the five sites: a file both the stub and Locust load, so the
    stub's charger_info knows every charger's site and coordinates."""
    lines = ['[defaults]\nvendor = "ABB"\nmodel = "Terra"\nfirmware = "1.0.0"\n']
    for n, site in enumerate(SITES.values()):
        lines.append(f'[[sites]]\nid = "{site.id}"\nname = "{site.name}"\n')
        lines.append(f"lat = {site.lat}\nlon = {site.lon}\n")
        lines.append(f'[[chargers]]\nsite = "{site.id}"\npattern = "{site.id}_{{n:02d}}"\n')
        lines.append(
            f"count = {FLEET_SIZE // len(SITES)}\nrated_power_kw = {(50, 100, 150)[n % 3]}\n"
        )
    path.write_text("\n".join(lines))
    assert len(fleets.load(path).chargers) == FLEET_SIZE
    return path


class PrometheusServer:
    """``prometheus`` on a free loopback port with a temporary config and storage."""

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.config_path = directory / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "prometheus.log"
        assert PROMETHEUS is not None
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            assert self.process.poll() is None, self.log_path.read_text()
            return False

    def api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path} {params}: {exc.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def stop(self) -> None:
        terminate(self.process)


def prometheus_config(locust_target: str, stub_target: str) -> dict[str, Any]:
    """prometheus/prometheus.yml's jobs (their names: the dashboards' $job / $stub_job),
    pointed at this test's processes and scraped every second."""
    compose = yaml.safe_load(PROMETHEUS_FILE.read_text())
    targets = {"locust": locust_target, "csms-stub": stub_target}
    jobs = [
        {
            "job_name": job["job_name"],
            "metrics_path": job.get("metrics_path", "/metrics"),
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "static_configs": [{"targets": [targets[job["job_name"]]]}],
        }
        for job in compose["scrape_configs"]
    ]
    assert {job["job_name"] for job in jobs} == set(targets)
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": jobs,
    }


class Stub:
    """The stub process, restartable on the same ports and database schema."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.port, self.api_port = free_port(), free_port()
        self.directory = directory
        self.args = [*args, "--port", str(self.port), "--api-port", str(self.api_port)]
        self.process: StubProcess | None = None

    def start(self) -> StubProcess:
        self.process = start_stub_process(self.directory, *self.args)
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


@dataclass
class LiveRun:
    prometheus: PrometheusServer
    schema: str
    run_id: str
    start: float
    end: float
    #: the load generator's /metrics once the capacity search had answered
    exposition: str

    @property
    def last_up(self) -> float:
        """The last moment Prometheus saw the load generator up: Grafana's "now" for the
        instant queries (after it, the run's series are stale)."""
        data = self.prometheus.api(
            "query_range",
            query='up{job="locust"} == 1',
            start=f"{self.start:.3f}",
            end=f"{self.end + 5:.3f}",
            step="0.5",
        )
        (series,) = data["result"]
        return float(series["values"][-1][0])

    def values(self) -> dict[str, str]:
        """The dashboards' variables and Grafana's built-ins, as Grafana would fill them."""
        seconds = max(1, math.ceil(self.end - self.start))
        return {
            "job": "locust",
            "run": self.run_id,
            "stub_job": "csms-stub",
            "__rate_interval": RATE_INTERVAL,
            "__interval": "1s",
            "__range": f"{seconds}s",
        }

    def query(self, target: dict[str, Any]) -> list[dict[str, Any]]:
        """A panel target as Grafana runs it: instant at the run's end, else over the run."""
        expr = substitute(target["expr"], self.values())
        if target.get("instant"):
            return self.prometheus.api("query", query=expr, time=f"{self.last_up:.3f}")["result"]
        return self.prometheus.api(
            "query_range", query=expr, start=f"{self.start:.3f}", end=f"{self.end:.3f}", step="1"
        )["result"]

    def rows(self, query: str) -> list[dict[str, Any]]:
        """Run ``query`` as it is (no parameters) in the stub's schema."""
        return asyncio.run(Database("postgresql", POSTGRES_URL, self.schema).rows(query))


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _capacity_answered(url: str) -> str | None:
    try:
        text = _scrape(url)
    except OSError:
        return None
    match = re.search(r"^ocpp_loadgen_capacity_max_chargers(?:\{[^}]*\})? (\S+)$", text, re.M)
    return text if match and float(match[1]) > 0 else None


def _remote_start(api_url: str, charger_id: str) -> None:
    request = urllib.request.Request(
        f"{api_url}/chargers/{charger_id}/start",
        data=json.dumps({"evse_id": 1, "connector_id": 1}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except urllib.error.HTTPError:
        pass  # the charger said no (busy): still a CSMS CALL with an answer


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    """One run for all the live tests: the stub on PostgreSQL, Prometheus, and Locust's
    capacity search; after the answer, while the run lingers, the faults."""
    if PROMETHEUS is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    directory = tmp_path_factory.mktemp("dashboards")
    fleet = write_fleet(directory / "fleet.toml")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    stub = Stub(directory, "--database-url", POSTGRES_URL, "--database-schema", schema)
    stub.args += ["--fleet", str(fleet), "--error-ratio", str(STUB_ERROR_RATIO)]
    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    prometheus: PrometheusServer | None = None
    locust: Background | None = None
    try:
        process = stub.start()
        prometheus = PrometheusServer(
            directory,
            prometheus_config(f"127.0.0.1:{metrics_port}", f"127.0.0.1:{stub.api_port}"),
        )
        wait_for(prometheus.ready, 30, "prometheus ready")
        start = time.time()
        locust = Background(
            directory / "locust.log",
            *("--host", process.ws_url, "--fleet", str(fleet), *FAST, *CAPACITY_ARGS),
            *("--capacity-linger", str(LINGER), "--run-time", "120s"),
            *("--ocpp-profile", "mixed:idle=1,sessions=3,remote=1", "--call-timeout", "1"),
            *("--reconnect-cap", "1", "--only-summary"),
            *("--slo-error-ratio", str(SLO_ERROR_RATIO)),
            # both offered, the stub picks the first: the panels show a 2.1 run's versions
            *("--ocpp-version", "2.1,2.0.1"),
            *("--prometheus-port", str(metrics_port)),  # after FAST's 0: the last one wins
        )
        exposition = wait_for(lambda: _capacity_answered(metrics_url), 60, "the capacity answer")
        # CSMS-initiated CALLs: remote starts (a charger that is busy answers Rejected), a
        # few seconds apart: a counter's first sample is no increase to rate()
        chargers = [c["charger_id"] for c in get(process.api_url, "/chargers") if c["connected"]]
        assert len(chargers) == CAPACITY
        for charger_id in chargers[:8]:
            _remote_start(process.api_url, charger_id)
            time.sleep(0.4)
        # a second connection with a charger's id: the stub closes the first one, and that
        # charger reconnects (the reconnect series exists before the restart below)
        with ws_connect(
            f"{process.ws_url}/{chargers[-1]}", subprotocols=[Subprotocol("ocpp2.0.1")]
        ):
            time.sleep(0.3)
        # twice, the stub stops answering for longer than the chargers' CALL timeout (1 s):
        # timeouts, then the replies come late (protocol errors); twice, because the
        # first time creates the series and rate() sees no increase in a first sample
        for _ in range(2):
            os.kill(process.process.pid, signal.SIGSTOP)
            time.sleep(2)
            os.kill(process.process.pid, signal.SIGCONT)
            time.sleep(1.5)
        # the stub goes away and comes back: disconnects, refused connects, reconnects,
        # transaction messages queued offline and replayed
        stub.stop()
        time.sleep(1.5)
        stub.start()
        code = locust.wait(LINGER + 30)
        end = time.time()
        output = locust.output()
        assert code in (0, 1), output[-3000:]  # 1: Locust counted failed requests
        assert "Traceback" not in output, output[-3000:]
        assert f"capacity: {CAPACITY} chargers" in output, output[-3000:]
        time.sleep(1.5)  # the stub's last scrape
        yield LiveRun(prometheus, schema, run_id_of(output), start, end, exposition)
    finally:
        if locust is not None:
            locust.stop()
        stub.stop()
        if prometheus is not None:
            prometheus.stop()
        asyncio.run(_drop_schema(schema))


async def _drop_schema(schema: str) -> None:
    engine = create_async_engine(POSTGRES_URL)
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await engine.dispose()


def _values(result: list[dict[str, Any]]) -> list[float]:
    points = [p for series in result for p in (series.get("values") or [series["value"]])]
    return [float(v) for _, v in points if math.isfinite(float(v))]


def test_the_temporary_config_passes_promtool(live: LiveRun) -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "config", str(live.prometheus.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_load_generator_series_carries_the_run(live: LiveRun) -> None:
    samples = [line for line in live.exposition.splitlines() if line.startswith("ocpp_loadgen_")]
    assert samples
    without = [line for line in samples if f'run="{live.run_id}"' not in line]
    assert not without, without[:5]


def test_the_variables_resolve(live: LiveRun) -> None:
    def label_values(label_name: str, selector: str) -> list[str]:
        return live.prometheus.api(f"label/{label_name}/values", **{"match[]": selector})

    assert label_values("job", "ocpp_loadgen_chargers_connected") == ["locust"]
    assert label_values("run", 'ocpp_loadgen_chargers_connected{job=~"locust"}') == [live.run_id]
    assert label_values("job", "csms_stub_chargers_connected") == ["csms-stub"]


def test_every_prometheus_query_returns_data(live: LiveRun) -> None:
    empty = []
    for name, panel, target in promql_targets():
        result = live.query(target)
        if _values(result):
            continue
        empty.append(f"{name}: {label(panel, target)}: {substitute(target['expr'], live.values())}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_the_panels_show_the_run(live: LiveRun) -> None:
    """A few panels' figures against what the test did."""
    by_title = {
        (name, panel["title"]): panel
        for name, dashboard in load_dashboards().items()
        for panel in panels_of(dashboard)
    }

    def figures(dashboard: str, title: str, ref: str = "A") -> list[float]:
        panel = by_title[(dashboard, title)]
        (target,) = [t for t in panel["targets"] if t["refId"] == ref]
        return _values(live.query(target))

    live_load, capacity = "live-load.json", "capacity-report.json"
    assert max(figures(capacity, "Capacity: most chargers within the SLOs")) == CAPACITY
    assert max(figures(capacity, "Target vs connected chargers", "A")) == CAPACITY
    assert max(figures(capacity, "Target vs connected chargers", "B")) == CAPACITY
    assert max(figures(live_load, "Energy delivered by site")) > 0
    assert max(figures(live_load, "Transactions ended / s by outcome")) > 0
    assert max(figures(live_load, "CSMS CALLs / s by action and status")) > 0
    assert max(figures(live_load, "CALLs without a result / s, by outcome")) > 0  # timeouts
    assert max(figures(live_load, "Reconnects / s by reason")) > 0
    assert max(figures(live_load, "Protocol errors / s by kind")) > 0  # late replies
    # the stub's --error-ratio: CALLERROR InternalError, as the chargers and the stub count it
    by_code = live.query(by_title[(live_load, "CALL errors / s by error code")]["targets"][0])
    assert "InternalError" in {series["metric"]["error_code"] for series in by_code}
    assert max(_values(by_code)) > 0
    stub_messages = live.query(
        by_title[(live_load, "Stub: messages / s by action and outcome")]["targets"][0]
    )
    assert "injected_error" in {series["metric"]["outcome"] for series in stub_messages}
    assert max(figures(live_load, "Offline queue depth")) > 0
    # what the stub picked of the offer, as the chargers and the stub count it
    by_version = live.query(
        by_title[(live_load, "Chargers connected by OCPP version")]["targets"][0]
    )
    assert {series["metric"]["version"] for series in by_version} == {"2.1"}
    assert max(_values(by_version)) == CAPACITY
    stub_versions = live.query(
        by_title[(live_load, "Stub: messages / s by OCPP version")]["targets"][0]
    )
    assert {series["metric"]["version"] for series in stub_versions} == {"2.1"}
    p95 = figures(live_load, "CALL latency p50 / p95 / p99 by action", "B")
    # the timeouts (1 s) lift it, to at most the top of their bucket (1 s, 2.5 s]
    assert p95 and 0 < min(p95) < 0.1 and 1 < max(p95) <= 2.5
    online = live.query(
        by_title[("fleet-map.json", "Sites: chargers online, charging")]["targets"][0]
    )
    assert online
    for series in online:  # the fleet's sites, where the fleet file puts them
        site = SITES[series["metric"]["site"]]
        assert (float(series["metric"]["lat"]), float(series["metric"]["lon"])) == (
            site.lat,
            site.lon,
        )


def test_every_sql_query_returns_rows(live: LiveRun) -> None:
    for name, panel, target in sql_targets():
        rows = live.rows(target["rawSql"])
        assert rows, f"{name}: {label(panel, target)} returned no rows"
        if "lat" in rows[0]:  # a geomap's: every site of the fleet, with its coordinates
            assert {row["site"] for row in rows} == set(SITES)
            assert all(row["lat"] is not None and row["lon"] is not None for row in rows)
