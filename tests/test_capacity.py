"""The capacity search's pure core: parsing, judging a step, and the search against a
simulated CSMS with a known ceiling (no sockets, no time, deterministic)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.capacity.config import (
    CapacityConfig,
    Step,
    parse_p95_slo,
    parse_slo_overrides,
    parse_step,
)
from loadgen.capacity.judgement import (
    ActionStats,
    StepMeasurement,
    admission_note,
    bucket_percentile,
    count_percentile,
    judge,
    judge_admission,
    percentile,
)
from loadgen.capacity.rate import (
    RateSearch,
    RateStepMeasurement,
    fifo_boot_rate,
    fifo_boots,
    judge_rate,
    spawn_bursts,
)
from loadgen.capacity.search import (
    LIMITED_BY_GENERATOR,
    REACHED_MAX,
    START_FAILED,
    CapacityResult,
    CapacitySearch,
)
from loadgen.pacing import start_offset

# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("x1.5", "factor", 1.5),
        ("X2", "factor", 2.0),
        (" ×1.25 ", "factor", 1.25),  # noqa: RUF001
        ("*3", "factor", 3.0),
        ("x 1.5", "factor", 1.5),
        ("+100", "increment", 100),
        ("+1", "increment", 1),
    ],
)
def test_parse_step(text: str, kind: str, value: float) -> None:
    step = parse_step(text)
    assert (step.kind, step.value) == (kind, value)
    assert Step.parse(str(step)) == step


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "write a factor like 'x1.5' or an increment like '+100'"),
        ("1.5", "write a factor"),
        ("100", "write a factor"),
        ("-10", "write a factor"),
        ("+1.5", "write a factor"),
        ("xabc", "write a factor"),
        ("x", "write a factor"),
        ("xnan", "write a factor"),
        ("x1", "must be more than 1"),
        ("x0.5", "must be more than 1"),
        ("+0", "whole number >= 1"),
    ],
)
def test_parse_step_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace(".", r"\.")):
        parse_step(text)


def test_step_after() -> None:
    assert Step.parse("x1.5").after(10) == 15
    assert Step.parse("x1.5").after(11) == 17  # rounded up
    assert Step.parse("x1.1").after(100) == 110  # no float noise: not 111
    assert Step.parse("x1.01").after(1) == 2  # always at least one more
    assert Step.parse("+100").after(50) == 150


def test_parse_slo_overrides() -> None:
    assert parse_slo_overrides("BootNotification=2000,Heartbeat=500") == {
        "BootNotification": 2000.0,
        "Heartbeat": 500.0,
    }
    assert parse_slo_overrides(" TransactionEvent = 250.5 , ") == {"TransactionEvent": 250.5}
    assert parse_slo_overrides("") == {}
    assert parse_slo_overrides("  ") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Heartbeat", "write Action=milliseconds"),
        ("Heartbeat=abc", "'abc' is not a number of milliseconds"),
        ("Heartbeat=", "'' is not a number of milliseconds"),
        ("Heartbeat=-1", "must be a positive number of ms"),
        ("Heartbeat=0", "must be a positive number of ms"),
        ("Heartbeat=inf", "must be a positive number of ms"),
        ("=500", "'' is not an OCPP action name"),
        ("Heart beat=500", "'Heart beat' is not an OCPP action name"),
        ("Heartbeat=500,Heartbeat=600", "SLO override for Heartbeat given twice"),
    ],
)
def test_parse_slo_overrides_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_slo_overrides(text)


def test_parse_slo_overrides_known_actions() -> None:
    known = {"Heartbeat", "BootNotification"}
    assert parse_slo_overrides("Heartbeat=500", known) == {"Heartbeat": 500.0}
    with pytest.raises(
        ValueError, match=r"unknown action 'HeartBeat' \(did you mean Heartbeat\?\)"
    ):
        parse_slo_overrides("HeartBeat=500", known)


def test_config_parses_text_and_validates() -> None:
    config = CapacityConfig(step="+50", p95_ms_by_action="Heartbeat=200")
    assert config.step == Step("increment", 50)
    assert config.p95_slo_ms("Heartbeat") == 200
    assert config.p95_slo_ms("Authorize") == 1000
    assert CapacityConfig(p95_ms=None).p95_slo_ms("Authorize") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": 0}, "--capacity-start must be a whole number >= 1"),
        ({"start": 10, "max_chargers": 5}, r"--capacity-max \(5\) must be"),
        ({"hold_seconds": 0}, "--capacity-hold must be positive"),
        ({"p95_ms": -5}, "--slo-p95-ms must be positive"),
        ({"max_call_error_ratio": 1.5}, "the CALL error ratio SLO must be between 0 and 1"),
        ({"max_connect_failure_ratio": -0.1}, "the connect failure ratio SLO"),
        ({"max_disconnect_ratio": 2}, "the disconnect ratio SLO"),
        ({"max_schedule_lag_p99_ms": 0}, "the schedule-lag guard must be positive"),
        ({"max_generator_cpu": -1}, "the CPU guard must be positive"),
        ({"resolution": -1}, "the resolution must be a whole number >= 0"),
        ({"step": "1.5"}, "write a factor like 'x1.5'"),
        ({"p95_ms_by_action": "Heartbeat"}, "write Action=milliseconds"),
        (
            {"p95_ms_by_action": {"Heartbeat": 0}},
            "the p95 SLO for Heartbeat must be a positive number",
        ),
    ],
)
def test_config_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CapacityConfig(**kwargs)  # type: ignore[arg-type]


# -- percentiles ----------------------------------------------------------------------------


def test_percentile() -> None:
    samples = list(range(1, 101))  # 1..100
    assert percentile(samples, 0) == 1
    assert percentile(samples, 100) == 100
    assert percentile(samples, 50) == pytest.approx(50.5)
    assert percentile(samples, 95) == pytest.approx(95.05)
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 50) == 2  # order does not matter
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1], 101)


def test_bucket_percentile_like_histogram_quantile() -> None:
    inf = math.inf
    # 100 observations: 50 in (0, 10], 40 in (10, 100], 10 in (100, +Inf)
    buckets = [(10.0, 50), (100.0, 90), (inf, 100)]
    assert bucket_percentile(buckets, 50) == pytest.approx(10.0)
    assert bucket_percentile(buckets, 25) == pytest.approx(5.0)
    assert bucket_percentile(buckets, 70) == pytest.approx(55.0)
    assert bucket_percentile(buckets, 95) == 100.0  # in +Inf: the largest finite bound
    # empty buckets in between are skipped
    assert bucket_percentile([(1.0, 0), (2.0, 0), (4.0, 10), (inf, 10)], 50) == pytest.approx(3.0)
    assert bucket_percentile([(1.0, 0), (inf, 0)], 95) is None
    assert bucket_percentile([], 95) is None


def test_action_stats_from_samples() -> None:
    stats = ActionStats.from_samples(range(1, 101))
    assert stats.count == 100
    assert stats.p95_ms == pytest.approx(95.05)
    assert ActionStats.from_samples([]) == ActionStats(0)
    # samples given straight to a measurement become stats
    step = StepMeasurement(10, {"Heartbeat": [5.0, 5.0, 7.0]})
    assert step.actions["Heartbeat"].count == 3
    assert step.calls == 3


# -- judge ----------------------------------------------------------------------------------


def healthy(chargers: int, **changes: object) -> StepMeasurement:
    fields: dict[str, object] = {
        "chargers": chargers,
        "actions": {
            "Heartbeat": ActionStats(chargers, 20, 40, 60),
            "TransactionEvent": ActionStats(2 * chargers, 30, 80, 120),
        },
        "call_errors": 0,
        "connect_attempts": chargers,
        "connect_failures": 0,
        "unexpected_disconnects": 0,
        "messages_per_s": chargers / 10,
        "schedule_lag_p99_ms": 5.0,
        "cpu": 0.3,
    }
    fields.update(changes)
    return StepMeasurement(**fields)  # type: ignore[arg-type]


CONFIG = CapacityConfig(
    start=100,
    p95_ms=1000,
    p95_ms_by_action={"TransactionEvent": 500},
    max_call_error_ratio=0.01,
    max_connect_failure_ratio=0.02,
    max_disconnect_ratio=0.05,
    max_schedule_lag_p99_ms=100,
    max_generator_cpu=0.9,
)


def test_judge_healthy_step() -> None:
    assert judge(healthy(100), CONFIG) == judge(healthy(100), CONFIG)
    verdict = judge(healthy(100), CONFIG)
    assert verdict.ok and verdict.reasons == [] and not verdict.generator_saturated


def test_judge_p95_default_and_override() -> None:
    step = healthy(
        100,
        actions={
            "Heartbeat": ActionStats(100, 10, 900, 990),  # under the default 1000
            "TransactionEvent": ActionStats(200, 100, 812.4, 900),  # over its 500
            "Authorize": ActionStats(50, 100, 1500, 2000),  # over the default
        },
    )
    verdict = judge(step, CONFIG)
    assert not verdict.ok and not verdict.generator_saturated
    assert verdict.reasons == [
        "p95 Authorize 1500 ms > 1000 ms",
        "p95 TransactionEvent 812 ms > 500 ms",
    ]


def test_judge_p95_exactly_at_slo_holds_and_no_default() -> None:
    at = healthy(100, actions={"TransactionEvent": ActionStats(10, 1, 500, 600)})
    assert judge(at, CONFIG).ok
    only_overrides = CapacityConfig(p95_ms=None, p95_ms_by_action="Heartbeat=50")
    slow = healthy(100, actions={"Authorize": ActionStats(10, 1, 9999, 9999)})
    assert judge(slow, only_overrides).ok
    slow_heartbeat = healthy(100, actions={"Heartbeat": ActionStats(10, 1, 60, 70)})
    assert judge(slow_heartbeat, only_overrides).reasons == ["p95 Heartbeat 60 ms > 50 ms"]


def test_judge_call_errors() -> None:
    verdict = judge(healthy(100, call_errors=9), CONFIG)  # 9/300 = 3 %
    assert verdict.reasons == ["CALL error ratio 3% (9/300) > 1%"]
    assert judge(healthy(100, call_errors=3), CONFIG).ok  # 1 %: at the limit


def test_judge_connect_failures() -> None:
    verdict = judge(healthy(100, connect_failures=5), CONFIG)
    assert verdict.reasons == ["connect failure ratio 5% (5/100) > 2%"]
    # no connection attempted during the hold (bisecting down): nothing to judge
    assert judge(healthy(100, connect_attempts=0, connect_failures=0), CONFIG).ok


def test_judge_unexpected_disconnects() -> None:
    verdict = judge(healthy(100, unexpected_disconnects=10), CONFIG)
    assert verdict.reasons == ["unexpected disconnect ratio 10% (10/100 chargers) > 5%"]


def test_judge_no_calls_is_a_failure() -> None:
    verdict = judge(healthy(100, actions={}), CONFIG)
    assert verdict.reasons == ["no CALLs measured at 100 chargers"]


def test_judge_guards_off() -> None:
    config = CapacityConfig(
        p95_ms=None,
        max_call_error_ratio=None,
        max_connect_failure_ratio=None,
        max_disconnect_ratio=None,
        max_schedule_lag_p99_ms=None,
    )
    bad = healthy(
        100,
        call_errors=300,
        connect_failures=100,
        unexpected_disconnects=100,
        schedule_lag_p99_ms=5000,
        cpu=4.0,
    )
    assert judge(bad, config).ok


def test_judge_generator_saturated() -> None:
    lagging = judge(healthy(100, schedule_lag_p99_ms=250), CONFIG)
    assert not lagging.ok and lagging.generator_saturated
    assert lagging.reasons == ["load generator saturated: schedule lag p99 250 ms > 100 ms"]
    busy = judge(healthy(100, cpu=0.97), CONFIG)
    assert busy.generator_saturated
    assert busy.reasons == ["load generator saturated: CPU 0.97 > 0.90"]
    # CSMS SLO violations are still listed, after the saturation
    both = judge(healthy(100, schedule_lag_p99_ms=250, call_errors=30), CONFIG)
    assert both.generator_saturated
    assert both.reasons[0].startswith("load generator saturated")
    assert both.reasons[1].startswith("CALL error ratio")


def test_judge_without_generator_figures() -> None:
    assert judge(healthy(100, schedule_lag_p99_ms=None, cpu=None), CONFIG).ok


# -- the search against a simulated CSMS ----------------------------------------------------


def csms_with_ceiling(
    ceiling: int, saturate_above: int | None = None
) -> Callable[[int], StepMeasurement]:
    """A CSMS that answers within 50 ms up to ``ceiling`` chargers and whose p95 explodes
    above; a load generator that lags above ``saturate_above``."""

    def measure(chargers: int) -> StepMeasurement:
        p95 = 50.0 if chargers <= ceiling else 2000.0 + 10.0 * (chargers - ceiling)
        lag = 2.0 if saturate_above is None or chargers <= saturate_above else 400.0
        return healthy(
            chargers,
            actions={"Heartbeat": ActionStats(chargers, p95 / 2, p95, p95 * 1.5)},
            schedule_lag_p99_ms=lag,
        )

    return measure


def run(
    search: CapacitySearch, measure: Callable[[int], StepMeasurement], limit: int = 10_000
) -> tuple[CapacityResult, list[int]]:
    targets: list[int] = []
    while (target := search.next_target()) is not None:
        assert search.next_target() == target  # asking again gives the same target
        targets.append(target)
        assert len(targets) <= limit, "the search does not terminate"
        search.record(measure(target))
    assert search.next_target() is None and search.phase == "done"
    return search.result(), targets


def step_bound(config: CapacityConfig) -> int:
    """Ramp steps plus bisection steps: an upper bound on the number of holds."""
    step = config.step
    assert isinstance(step, Step)
    if step.kind == "factor":
        ramp = 1
        n = config.start
        while n < config.max_chargers:
            n = min(step.after(n), config.max_chargers)
            ramp += 1
    else:
        ramp = 1 + math.ceil((config.max_chargers - config.start) / step.value)
    # the first bad is at most one step above the last good
    widest = max(step.after(config.max_chargers) - config.max_chargers, 1)
    return ramp + math.ceil(math.log2(widest)) + 1


def test_search_factor_then_bisect() -> None:
    config = CapacityConfig(start=100, step="x2", max_chargers=10_000, p95_ms=500)
    result, targets = run(CapacitySearch(config), csms_with_ceiling(1234))
    assert targets[:6] == [100, 200, 400, 800, 1600, 1200]
    assert result.max_chargers == 1234
    assert not result.limited_by_generator
    assert result.stopped_because.startswith("refined by bisection: 1234 held, 1235 failed (p95")
    assert [c for c, _ in result.steps] == targets
    assert result.summary() == f"capacity: 1234 chargers ({result.stopped_because})"


def test_search_increment_with_resolution() -> None:
    config = CapacityConfig(start=100, step="+100", max_chargers=1000, p95_ms=500, resolution=10)
    result, targets = run(CapacitySearch(config), csms_with_ceiling(537))
    assert targets[:6] == [100, 200, 300, 400, 500, 600]
    assert result.max_chargers is not None
    assert 0 <= 537 - result.max_chargers < 10
    good = [c for c, v in result.steps if v.ok]
    bad = [c for c, v in result.steps if not v.ok]
    assert min(bad) - max(good) <= 10


def test_search_start_fails() -> None:
    config = CapacityConfig(start=100, step="x1.5", max_chargers=1000, p95_ms=500)
    result, targets = run(CapacitySearch(config), csms_with_ceiling(40))
    assert targets == [100]
    assert result.max_chargers is None and not result.limited_by_generator
    assert result.stopped_because.startswith(f"{START_FAILED} (100 chargers): p95 Heartbeat")
    assert result.summary().startswith("capacity: no answer: even the start failed")


def test_search_reaches_max() -> None:
    config = CapacityConfig(start=100, step="x1.5", max_chargers=500, p95_ms=500)
    result, targets = run(CapacitySearch(config), csms_with_ceiling(10_000))
    assert targets == [100, 150, 225, 338, 500]  # the last step is capped at the max
    assert result.max_chargers == 500
    assert result.stopped_because == f"{REACHED_MAX} (500 chargers held)"
    assert all(v.ok for _, v in result.steps)


def test_search_start_equals_max() -> None:
    config = CapacityConfig(start=50, max_chargers=50)
    result, targets = run(CapacitySearch(config), csms_with_ceiling(100))
    assert targets == [50] and result.max_chargers == 50


def test_search_generator_saturated_while_ramping() -> None:
    config = CapacityConfig(start=100, step="x2", max_chargers=10_000, p95_ms=500)
    # the CSMS would hold 5000 but the generator lags above 700
    result, targets = run(CapacitySearch(config), csms_with_ceiling(5000, saturate_above=700))
    assert targets == [100, 200, 400, 800]
    assert result.max_chargers is None
    assert result.limited_by_generator
    assert result.stopped_because == (
        f"{LIMITED_BY_GENERATOR} at 800 chargers: "
        "load generator saturated: schedule lag p99 400 ms > 100 ms"
    )
    assert result.steps[-1][1].generator_saturated
    assert result.to_dict()["max_chargers"] is None


def test_search_generator_saturated_while_bisecting() -> None:
    config = CapacityConfig(start=100, step="x2", max_chargers=10_000, p95_ms=500)
    # 1600 fails on the CSMS side, then the bisection's 1200 saturates the generator
    csms = csms_with_ceiling(1000)

    def measure(chargers: int) -> StepMeasurement:
        step = csms(chargers)
        if chargers == 1200:  # say the CSMS was slow to close sockets and the generator stalled
            return healthy(chargers, actions=step.actions, schedule_lag_p99_ms=300)
        return step

    result, targets = run(CapacitySearch(config), measure)
    assert targets == [100, 200, 400, 800, 1600, 1200]
    assert result.max_chargers is None and result.limited_by_generator


def test_search_generator_saturated_at_start() -> None:
    config = CapacityConfig(start=100)
    result, _ = run(CapacitySearch(config), csms_with_ceiling(5000, saturate_above=10))
    assert result.max_chargers is None and result.limited_by_generator


def test_search_record_checks() -> None:
    search = CapacitySearch(CapacityConfig(start=100, max_chargers=100))
    with pytest.raises(ValueError, match="a measurement of 99 chargers, but the target is 100"):
        search.record(healthy(99))
    assert search.result().stopped_because == "unfinished (next target 100)"
    assert search.phase == "ramp"
    search.record(healthy(100))
    with pytest.raises(RuntimeError, match="over"):
        search.record(healthy(100))


def test_result_to_dict() -> None:
    config = CapacityConfig(start=10, step="+10", max_chargers=100, p95_ms=500)
    result, _ = run(CapacitySearch(config), csms_with_ceiling(25))
    data = result.to_dict()
    assert data["max_chargers"] == 25
    assert data["steps"][0] == {
        "chargers": 10,
        "ok": True,
        "generator_saturated": False,
        "reasons": [],
    }
    assert data["steps"][2]["reasons"] == ["p95 Heartbeat 2050 ms > 500 ms"]


#: resolution ratios the property tests mix in (0: the absolute resolution alone)
RATIOS = st.one_of(st.just(0.0), st.sampled_from([0.01, 0.05, 0.1, 0.5]), st.floats(0, 0.99))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.integers(1, 500),
    factor=st.sampled_from(["x1.1", "x1.25", "x1.5", "x2", "x3", "x10"]),
    span=st.integers(0, 20_000),
    ceiling_fraction=st.floats(0, 1),
    resolution=st.integers(0, 50),
    ratio=RATIOS,
)
def test_search_finds_the_ceiling_factor(
    start: int, factor: str, span: int, ceiling_fraction: float, resolution: int, ratio: float
) -> None:
    max_chargers = start + span
    ceiling = start + int(span * ceiling_fraction)
    config = CapacityConfig(
        start, factor, max_chargers, p95_ms=500, resolution=resolution, resolution_ratio=ratio
    )
    check_search(config, ceiling)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(1, 500),
    increment=st.integers(1, 1000),
    span=st.integers(0, 5000),
    ceiling=st.integers(0, 6000),
    resolution=st.integers(0, 50),
    ratio=RATIOS,
)
def test_search_finds_the_ceiling_increment(
    start: int, increment: int, span: int, ceiling: int, resolution: int, ratio: float
) -> None:
    config = CapacityConfig(
        start,
        f"+{increment}",
        start + span,
        p95_ms=500,
        resolution=resolution,
        resolution_ratio=ratio,
    )
    check_search(config, ceiling)


def check_search(config: CapacityConfig, ceiling: int) -> None:
    result, targets = run(CapacitySearch(config), csms_with_ceiling(ceiling))
    assert len(targets) == len(set(targets)), f"a target measured twice: {targets}"
    assert len(targets) <= step_bound(config)
    assert all(config.start <= t <= config.max_chargers for t in targets)
    assert not result.limited_by_generator
    if ceiling < config.start:
        assert result.max_chargers is None
        assert result.stopped_because.startswith(START_FAILED)
        assert targets == [config.start]
    elif ceiling >= config.max_chargers:
        assert result.max_chargers == config.max_chargers
        assert result.stopped_because.startswith(REACHED_MAX)
    else:
        # within one resolution step below the true ceiling, never above it
        good = result.max_chargers
        assert good is not None
        assert good <= ceiling
        assert ceiling - good < config.resolution_at(good)
        assert config.resolution_at(good) >= max(1, config.resolution)
        # the bisection stopped as soon as good and bad were that close, not before
        bad = min(c for c, v in result.steps if not v.ok)
        assert good < bad <= good + config.resolution_at(good)
        assert result.stopped_because.startswith(f"refined by bisection: {good} held, {bad}")
        # ... and went on while they were further apart
        known_good: int | None = None
        known_bad: int | None = None
        for chargers, verdict in result.steps[:-1]:
            if verdict.ok:
                known_good = chargers
            else:
                known_bad = chargers
            if known_good is not None and known_bad is not None:
                assert known_bad - known_good > config.resolution_at(known_good)
    # every verdict is the truth about its target
    for chargers, verdict in result.steps:
        assert verdict.ok == (chargers <= ceiling)


def test_module_is_pure() -> None:
    """No Locust, gevent or I/O libraries behind the searches and the judgement (checked in a
    fresh process); only :mod:`loadgen.capacity.measure` reads the metrics."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import loadgen.capacity.config, loadgen.capacity.judgement\n"
        "import loadgen.capacity.rate, loadgen.capacity.search\n"
        "bad = {'gevent', 'locust', 'socket', 'prometheus_client'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- nearest-rank percentiles of Locust's response times -----------------------------------


def test_count_percentile_nearest_rank() -> None:
    # 100 values: 90 x 20 ms, 5 x 140 ms, 5 x 900 ms
    counts = {140: 5, 20: 90, 900: 5}  # order does not matter
    assert count_percentile(counts, 50) == 20.0
    assert count_percentile(counts, 90) == 20.0  # rank 90: the last of the 20s
    assert count_percentile(counts, 91) == 140.0
    assert count_percentile(counts, 95) == 140.0  # rank 95: the last of the 140s
    assert count_percentile(counts, 95.5) == 900.0
    assert count_percentile(counts, 100) == 900.0
    assert count_percentile(counts, 0) == 20.0  # rank 1 at least: the smallest
    assert isinstance(count_percentile(counts, 50), float)
    assert count_percentile({140: 100}, 95) == 140.0  # no interpolation towards a bound
    assert count_percentile({7.5: 1}, 99) == 7.5


def test_count_percentile_ignores_empty_and_negative_counts() -> None:
    assert count_percentile({}, 95) is None
    assert count_percentile({10: 0, 20: 0}, 95) is None
    assert count_percentile({10: 0, 20: 3, 5000: -2}, 99) == 20.0  # deltas may dip below 0
    assert count_percentile({10: -5}, 50) is None


def test_count_percentile_float_ranks() -> None:
    # 3 values: p50 is rank ceil(1.5) = 2; p(100/3) is rank 1 exactly, not 2 (float noise)
    counts = {1: 1, 2: 1, 3: 1}
    assert count_percentile(counts, 50) == 2.0
    assert count_percentile(counts, 100 / 3) == 1.0
    assert count_percentile(counts, 200 / 3) == 2.0


@pytest.mark.parametrize("q", [-1, 100.5, math.inf])
def test_count_percentile_rejects_q(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        count_percentile({1: 1}, q)


# -- --slo-p95-ms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "default", "overrides"),
    [
        ("1000", 1000.0, {}),
        (" 250.5 ", 250.5, {}),
        ("1000,Heartbeat=500", 1000.0, {"Heartbeat": 500.0}),
        ("Heartbeat=500, 1000", 1000.0, {"Heartbeat": 500.0}),  # the default anywhere
        ("Heartbeat=500", None, {"Heartbeat": 500.0}),
        (
            "Heartbeat=500,BootNotification=2000",
            None,
            {"Heartbeat": 500.0, "BootNotification": 2000.0},
        ),
        ("none", None, {}),
        ("None", None, {}),
        ("NONE,Heartbeat=500", None, {"Heartbeat": 500.0}),
        ("1000,", 1000.0, {}),
    ],
)
def test_parse_p95_slo(text: str, default: float | None, overrides: dict[str, float]) -> None:
    assert parse_p95_slo(text) == (default, overrides)
    assert parse_p95_slo(text, {"Heartbeat", "BootNotification"}) == (default, overrides)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", r"'abc' is not a number of milliseconds \(write e\.g\. 1000"),
        ("1000ms", "'1000ms' is not a number of milliseconds"),
        ("1000,2000", "give the default p95 only once"),
        ("none,1000", "give the default p95 only once"),
        ("1000,none", "give the default p95 only once"),
        ("0", "--slo-p95-ms must be positive, not 0"),
        ("-5", "--slo-p95-ms must be positive, not -5"),
        ("inf", "must be positive"),
        ("nan", "must be positive"),
        ("1000,Heartbeat=0", "must be a positive number of ms"),
        ("1000,Heartbeat=500,Heartbeat=600", "SLO override for Heartbeat given twice"),
        ("1000,Heart beat=5", "'Heart beat' is not an OCPP action name"),
    ],
)
def test_parse_p95_slo_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_p95_slo(text)


def test_parse_p95_slo_known_actions() -> None:
    with pytest.raises(
        ValueError, match=r"unknown action 'HeartBeat' \(did you mean Heartbeat\?\)"
    ):
        parse_p95_slo("1000,HeartBeat=500", {"Heartbeat"})
    default, overrides = parse_p95_slo("800,Heartbeat=500", {"Heartbeat"})
    config = CapacityConfig(p95_ms=default, p95_ms_by_action=overrides)
    assert config.p95_slo_ms("Heartbeat") == 500 and config.p95_slo_ms("Authorize") == 800


# -- the resolution ratio -------------------------------------------------------------------


def test_resolution_at() -> None:
    assert CapacityConfig().resolution_at(1000) == 1  # the defaults: exact
    assert CapacityConfig(resolution=10).resolution_at(1000) == 10
    ratio = CapacityConfig(resolution_ratio=0.05)
    assert ratio.resolution_at(1000) == 50
    assert ratio.resolution_at(1010) == 51  # rounded up
    assert ratio.resolution_at(10) == 1  # never below 1
    assert ratio.resolution_at(0) == 1
    assert CapacityConfig(resolution_ratio=0.1).resolution_at(1000) == 100  # not 101: no noise
    assert CapacityConfig(resolution_ratio=0.07).resolution_at(100) == 7
    both = CapacityConfig(resolution=20, resolution_ratio=0.01)
    assert both.resolution_at(1000) == 20  # the larger of the two
    assert both.resolution_at(5000) == 50


@pytest.mark.parametrize("ratio", [-0.01, 1.0, 1.5, math.nan, math.inf])
def test_config_rejects_resolution_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match="the resolution ratio must be 0 to 1"):
        CapacityConfig(resolution_ratio=ratio)


def test_search_with_resolution_ratio_stops_early() -> None:
    config = CapacityConfig(start=100, step="x2", max_chargers=100_000, p95_ms=500)
    exact, exact_targets = run(CapacitySearch(config), csms_with_ceiling(12_345))
    coarse_config = CapacityConfig(
        start=100, step="x2", max_chargers=100_000, p95_ms=500, resolution_ratio=0.05
    )
    coarse, coarse_targets = run(CapacitySearch(coarse_config), csms_with_ceiling(12_345))
    assert exact.max_chargers == 12_345
    assert coarse_targets[:9] == exact_targets[:9] == [
        100, 200, 400, 800, 1600, 3200, 6400, 12800, 9600,
    ]  # fmt: skip
    # 12400 - 12000 = 400 <= 5 % of 12000 = 600: done, 9 holds fewer than the exact search
    assert coarse_targets[9:] == [11200, 12000, 12400]
    assert len(exact_targets) == len(coarse_targets) + 9
    assert coarse.max_chargers == 12000
    assert coarse_config.resolution_at(12000) == 600
    assert coarse.stopped_because.startswith("refined by bisection: 12000 held, 12400 failed")


# -- the new measurement fields --------------------------------------------------------------


def test_step_measurement_to_dict() -> None:
    step = StepMeasurement(
        chargers=100,
        actions={
            "TransactionEvent": ActionStats(200, 30, 80, 120, errors=2),
            "Heartbeat": ActionStats(100, 20, 40, 60),
        },
        call_errors=2,
        connect_attempts=10,
        connect_failures=1,
        unexpected_disconnects=3,
        messages_per_s=12.5,
        schedule_lag_p99_ms=4.0,
        cpu=0.25,
        connected=97,
        booted=95,
        seconds=300.0,
        error_codes={"timeout": 1, "GenericError": 1},
    )
    assert step.to_dict() == {
        "chargers": 100,
        "connected": 97,
        "booted": 95,
        "seconds": 300.0,
        "actions": {
            "Heartbeat": {"count": 100, "errors": 0, "p50_ms": 20, "p95_ms": 40, "p99_ms": 60},
            "TransactionEvent": {
                "count": 200,
                "errors": 2,
                "p50_ms": 30,
                "p95_ms": 80,
                "p99_ms": 120,
            },
        },
        "calls": 300,
        "call_errors": 2,
        "error_codes": {"GenericError": 1, "timeout": 1},
        "connect_attempts": 10,
        "connect_failures": 1,
        "unexpected_disconnects": 3,
        "messages_per_s": 12.5,
        "schedule_lag_p99_ms": 4.0,
        "cpu": 0.25,
    }
    assert list(step.to_dict()["actions"]) == ["Heartbeat", "TransactionEvent"]
    assert list(step.to_dict()["error_codes"]) == ["GenericError", "timeout"]
    # defaults: not measured
    bare = StepMeasurement(5).to_dict()
    assert (bare["connected"], bare["seconds"], bare["error_codes"]) == (None, None, {})
    assert bare["actions"] == {} and bare["calls"] == 0


def test_step_measurement_copies_error_codes() -> None:
    codes = {"timeout": 1}
    step = StepMeasurement(5, error_codes=codes)
    codes["timeout"] = 99
    assert step.error_codes == {"timeout": 1}


# -- judge: chargers that never connected ---------------------------------------------------


def test_judge_missing_chargers() -> None:
    # CONFIG allows 2 % connect failures; nobody attempted during the hold (back-off)
    verdict = judge(healthy(100, connected=97, connect_attempts=0), CONFIG)
    assert not verdict.ok and not verdict.generator_saturated
    assert verdict.reasons == ["only 97 of 100 chargers connected (missing 3% > 2%)"]
    assert judge(healthy(100, connected=98), CONFIG).ok  # 2 %: at the limit
    assert judge(healthy(100, connected=100), CONFIG).ok
    assert judge(healthy(100, connected=None), CONFIG).ok  # not measured
    assert judge(healthy(100, connected=130), CONFIG).ok  # a step down, still closing
    nobody = judge(healthy(40, connected=0, connect_attempts=0), CONFIG)
    assert nobody.reasons == ["only 0 of 40 chargers connected (missing 100% > 2%)"]
    one_of_three = judge(healthy(3, connected=2, connect_attempts=0), CONFIG)
    assert one_of_three.reasons == ["only 2 of 3 chargers connected (missing 33.3% > 2%)"]


def test_judge_missing_chargers_with_other_reasons() -> None:
    verdict = judge(healthy(100, connected=90, connect_failures=10, call_errors=30), CONFIG)
    assert verdict.reasons == [
        "CALL error ratio 10% (30/300) > 1%",
        "connect failure ratio 10% (10/100) > 2%",
        "only 90 of 100 chargers connected (missing 10% > 2%)",
    ]


def test_judge_missing_chargers_guard_off() -> None:
    config = CapacityConfig(max_connect_failure_ratio=None)
    assert judge(healthy(100, connected=1), config).ok
    strict = CapacityConfig(max_connect_failure_ratio=0)
    assert judge(healthy(100, connected=99), strict).reasons == [
        "only 99 of 100 chargers connected (missing 1% > 0%)"
    ]


def test_search_against_a_connection_ceiling() -> None:
    """A CSMS that accepts at most 730 connections and answers the rest quickly: the
    search finds 730 from the missing chargers alone."""

    def measure(chargers: int) -> StepMeasurement:
        return healthy(chargers, connected=min(chargers, 730), connect_attempts=0)

    config = CapacityConfig(start=100, step="x2", max_chargers=10_000, max_connect_failure_ratio=0)
    result, targets = run(CapacitySearch(config), measure)
    assert targets[:5] == [100, 200, 400, 800, 600]
    assert result.max_chargers == 730
    assert result.stopped_because == (
        "refined by bisection: 730 held, 731 failed "
        "(only 730 of 731 chargers connected (missing 0.137% > 0%))"
    )


# -- issue 11: booted, not just connected; the ramp judged by the connect SLOs -----------------


def test_a_hold_counts_the_chargers_booted_not_just_connected() -> None:
    config = CapacityConfig(max_connect_failure_ratio=0.02)
    step = StepMeasurement(100, {"Heartbeat": ActionStats(100, 5, 9, 12)}, connected=100, booted=90)
    verdict = judge(step, config)
    assert verdict.reasons == ["only 90 of 100 chargers booted (missing 10% > 2%)"]
    assert judge(dataclasses.replace(step, booted=100), config).ok


def test_a_hold_leaves_the_ramps_boots_to_the_connect_slos() -> None:
    # a slow BootNotification in the hold (the ramp's last ones, reported late) is not a
    # latency failure of the hold: the ramp's connect SLOs judge it
    config = CapacityConfig(p95_ms=1000)
    step = StepMeasurement(
        50,
        {
            "Heartbeat": ActionStats(50, 5, 9, 12),
            "BootNotification": ActionStats(5, 3000, 3400, 3500),
        },
        connected=50,
        booted=50,
    )
    assert judge(step, config).ok


def test_the_ramp_is_judged_by_the_connect_slos() -> None:
    config = CapacityConfig(
        boot_p95_ms=2000, max_call_error_ratio=0.01, max_connect_failure_ratio=0.01
    )
    quick = StepMeasurement(
        40,
        {
            "BootNotification": ActionStats(40, 10, 20, 30),
            "Heartbeat": ActionStats(9, 5000, 9000, 9000),
        },
        connect_attempts=40,
    )
    assert judge_admission(quick, config) == []  # the ramp's heartbeats are not its business
    slow = StepMeasurement(
        40,
        {"BootNotification": ActionStats(44, 1500, 3400, 3900, errors=4)},
        connect_attempts=50,
        connect_failures=10,
    )
    assert judge_admission(slow, config) == [
        "connect failure ratio 20% (10/50) > 1%",
        "BootNotification error ratio 9.09% (4/44) > 1%",
        "p95 BootNotification 3400 ms > 2000 ms",
    ]
    assert (
        judge_admission(
            slow,
            CapacityConfig(
                boot_p95_ms=None, max_call_error_ratio=None, max_connect_failure_ratio=None
            ),
        )
        == []
    )


def test_an_admission_limit_is_said_in_words_with_the_rate() -> None:
    assert admission_note([], 40, 2.0) is None
    note = admission_note(["p95 BootNotification 3400 ms > 2000 ms"], 44, 2.0)
    assert note == (
        "admission limited: about 22 chargers/s (p95 BootNotification 3400 ms > 2000 ms)"
    )


def test_a_boot_slo_must_be_positive() -> None:
    with pytest.raises(ValueError, match="--slo-boot-p95-ms must be positive"):
        CapacityConfig(boot_p95_ms=0)


def test_the_connect_rate_is_reported_beside_the_chargers() -> None:
    result = CapacityResult(300, False, "refined by bisection", [])
    assert result.connect_rate_line() == "capacity: connect rate: no answer: not searched"
    assert result.to_dict()["max_connect_rate"] is None
    assert result.to_dict()["connect_rate_stopped_because"] == "not searched"
    found = dataclasses.replace(
        result, max_connect_rate=21.5, connect_rate_stopped_because="refined by bisection"
    )
    assert found.connect_rate_line() == (
        "capacity: connect rate 21.5 chargers/s (refined by bisection)"
    )
    assert found.to_dict()["max_connect_rate"] == 21.5


# -- the connect-rate search ----------------------------------------------------------------


def boot_queue(
    rate: float, chargers: int, boot_rate: float, connect_s: float = 0.0, late_s: float = 0.0
) -> list[tuple[float, float]]:
    """(arrival s, BootNotification latency s) of each charger of a rate step against a
    CSMS that answers boots one by one, ``boot_rate`` a second in arrival order (csms_stub
    --max-boot-rate), with arrivals as Locust makes them: bursts of floor(rate) users,
    floor(rate) / rate seconds apart (a busy generator: each burst ``late_s`` later than the
    one before), each spread by the process (loadgen.pacing), the generator connecting a
    burst's users one after the other, ``connect_s`` each."""
    burst = max(1, math.floor(rate))
    sizes = [min(burst, chargers - n // burst * burst) for n in range(chargers)]
    arrivals = [
        (n // burst) * (burst / rate + late_s)
        + max(start_offset(n % burst, size), (n % burst + 1) * connect_s)
        for n, size in enumerate(sizes)
    ]
    turn, out = 0.0, []
    for at in arrivals:
        turn = max(turn, at)
        out.append((at, turn + 0.002 - at))
        turn += 1 / boot_rate
    return out


def rate_step(
    rate: float,
    config: CapacityConfig,
    boot_rate: float,
    connect_s: float = 0.0,
    by_latency: bool = False,
    late_s: float = 0.0,
    starts_known: bool = True,
) -> RateStepMeasurement:
    """One rate step against :func:`boot_queue`: when its last boot was answered, and its
    slowest and quickest boots as Locust records them (ms rounded to two significant
    digits above 100); ``by_latency``: without the first (judged by the slowest boot);
    ``starts_known``: with when each burst really started (the process's batch starts)."""
    chargers = config.rate_step_size(rate)
    boots = boot_queue(rate, chargers, boot_rate, connect_s, late_s)
    bursts = spawn_bursts(chargers, rate)
    starts = tuple(at + n * late_s for n, (at, _) in enumerate(bursts))
    all_ms = [lat * 1000 for _, lat in boots]
    return RateStepMeasurement(
        rate=rate,
        chargers=chargers,
        booted=chargers,
        seconds=max(at + lat for at, lat in boots),
        ramp=StepMeasurement(chargers, {"BootNotification": all_ms}, connect_attempts=chargers),
        late_boot_ms=locust_ms(max(all_ms)),
        spawn_seconds=boots[-1][0],
        quick_boot_ms=locust_ms(min(all_ms)),
        last_boot_s=None if by_latency else max(at + lat for at, lat in boots),
        last_connect_s=None if by_latency else boots[-1][0],
        batch_starts_s=starts if starts_known else None,
    )


def locust_ms(ms: float) -> float:
    """A response time the way Locust's histogram keeps it."""
    digits = 0 if ms < 100 else -1 if ms < 1_000 else -2 if ms < 10_000 else -3
    return float(round(ms, digits))


@pytest.mark.parametrize(
    ("boot_rate", "step_chargers", "connect_s", "by_latency"),
    [
        (3.0, 0, 0.0, False),
        (10.0, 0, 0.0, False),
        (22.0, 0, 0.0, False),
        (47.0, 0, 0.0, False),
        (150.0, 0, 0.0, False),
        (10.0, 25, 0.0, False),
        (50.0, 120, 0.0, False),
        (50.0, 80, 0.002, False),
        (50.0, 80, 0.008, False),
        (10.0, 25, 0.02, False),
        (50.0, 120, 0.0, True),
        (10.0, 25, 0.0, True),
    ],
)
def test_the_rate_search_finds_the_boot_rate_within_its_resolution(
    boot_rate: float, step_chargers: int, connect_s: float, by_latency: bool
) -> None:
    # Steps of 120 chargers (a CSMS holding 150) end on a smaller burst than Locust's
    # floor(rate): a full burst before it waits longer, and that is no backlog. A
    # generator that takes 2 ms to connect each charger of a burst spreads its boots: their
    # latency hides part of a backlog, when the last is answered does not. One that takes
    # 8 ms delays the last boot at a CSMS that keeps up: when the last connection was made
    # says by how much.
    config = CapacityConfig(
        max_chargers=10_000,
        resolution_ratio=0.05,
        rate_start=2.0,
        rate_step_chargers=step_chargers,
    )
    search = RateSearch(config)
    while (rate := search.next_rate()) is not None:
        search.record(rate_step(rate, config, boot_rate, connect_s, by_latency))
    answer, why, by_generator = search.answer()
    assert answer is not None and not by_generator, why
    # kept pace within the tolerance, never more than 5 % above the true rate
    assert boot_rate * 0.95 <= answer <= boot_rate * 1.05, (answer, why)
    assert why.startswith("refined by bisection")
    assert "did not keep pace" in why
    rates = [rate for rate, _ in search.steps]
    assert rates[:2] == [2.0, 4.0] and len(set(rates)) == len(rates)


@pytest.mark.parametrize("boot_rate", [10.0, 50.0])
def test_a_busy_generator_starting_its_bursts_late_does_not_make_the_csms_slow(
    boot_rate: float,
) -> None:
    # A starved generator (a worker on a busy machine) starts each burst 0.15 s later than
    # Locust was asked to: the boots come late through no fault of the CSMS. Judged by the
    # plan, a CSMS that keeps up read as one that fell behind; judged by the bursts' real
    # starts (the process notes when each batch came), it keeps pace, and one 15 % too
    # slow still does not.
    config = CapacityConfig(rate_step_chargers=4 * int(boot_rate))
    late = rate_step(boot_rate, config, boot_rate, late_s=0.15)
    assert late.bursts()[-1][0] == pytest.approx(3 + 3 * 0.15)
    assert judge_rate(late, config).ok
    assert late.admitted_rate() == pytest.approx(boot_rate, rel=0.02)
    unknown = rate_step(boot_rate, config, boot_rate, late_s=0.15, starts_known=False)
    assert not judge_rate(unknown, config).ok
    slow = rate_step(boot_rate, config, boot_rate / 1.15, late_s=0.15)
    verdict = judge_rate(slow, config)
    assert not verdict.ok and "did not keep pace" in verdict.reasons[0]
    # starts that do not match the plan burst for burst (several workers) leave the plan
    other = RateStepMeasurement(**{**vars(late), "batch_starts_s": (0.0, 0.5)})
    assert other.bursts() == spawn_bursts(late.chargers, late.rate)
    # the report says which it was
    assert late.figures()["batch_starts_s"] == [at for at, _ in late.bursts()]
    assert other.figures()["batch_starts_s"] is None


def test_the_fifo_model_of_a_rate_step() -> None:
    # 25 chargers at 10/s: bursts of 10, 10 and 5, a second apart
    assert spawn_bursts(25, 10.0) == [(0.0, 10), (1.0, 10), (2.0, 5)]
    assert spawn_bursts(3, 0.5) == [(0.0, 1), (2.0, 1), (4.0, 1)]
    # a CSMS booting exactly 10/s keeps up: a full burst's last boot waits 0.9 s less the
    # 9 ms the process spread the burst by (loadgen.pacing), the last of all is answered at
    # 2.4 s
    assert fifo_boots(25, 10.0, 10.0) == pytest.approx((0.891, 2.4))
    # one booting 5/s falls behind: the last is answered at 24 / 5 s, 2.796 s after it
    # came (2 s + 4 ms)
    assert fifo_boots(25, 10.0, 5.0) == pytest.approx((2.796, 4.8))
    for boot_rate in (5.0, 10.0, 37.0):
        worst, last = fifo_boots(120, 50.0, boot_rate)
        assert fifo_boot_rate(120, 50.0, last) == pytest.approx(boot_rate, rel=1e-6)
        assert fifo_boot_rate(120, 50.0, worst, last=False) == pytest.approx(boot_rate, rel=1e-6)
    assert fifo_boot_rate(120, 50.0, 0.0) == math.inf
    # what a step says, less the quickest boot (the round trip), inverted
    config = CapacityConfig(rate_step_chargers=120)
    assert rate_step(50.0, config, 40.0).admitted_rate() == pytest.approx(40.0, rel=0.01)
    by_latency = rate_step(50.0, config, 40.0, by_latency=True)
    assert by_latency.admitted_rate() == pytest.approx(40.0, rel=0.03)  # Locust's rounding
    # a generator connecting a burst's chargers 8 ms apart (0.48 s for 60): the CSMS keeps
    # up with that
    spread = rate_step(60.0, config, 100.0, connect_s=0.008)
    assert spread.connect_s == pytest.approx(0.008)
    assert judge_rate(spread, config).ok
    slow = judge_rate(rate_step(60.0, config, 50.0), config)
    assert slow.reasons == [
        "did not keep pace at 60/s: the last boot was answered after 2382 ms "
        "(> 2056 ms; about 50 booted/s)"
    ]


def test_a_rate_step_is_judged_by_the_connect_slos_and_the_pace() -> None:
    config = CapacityConfig(boot_p95_ms=500.0, rate_step_chargers=100)
    assert judge_rate(rate_step(10.0, config, 100.0), config).ok
    slow = judge_rate(rate_step(20.0, config, 10.0), config)
    assert not slow.ok and not slow.generator_saturated
    assert any(r.startswith("did not keep pace at 20/s") for r in slow.reasons), slow.reasons
    assert any(r.startswith("p95 BootNotification") for r in slow.reasons)
    lost = dataclasses.replace(rate_step(10.0, config, 100.0), booted=90)
    assert judge_rate(lost, config).reasons == ["only 90 of 100 chargers booted within 9 s at 10/s"]


def test_a_generator_that_cannot_start_users_fast_enough_is_no_csms_figure() -> None:
    config = CapacityConfig(rate_step_chargers=100, rate_start=50.0)
    slow_spawn = dataclasses.replace(rate_step(50.0, config, 1000.0), spawn_seconds=6.0)
    verdict = judge_rate(slow_spawn, config)
    assert verdict.generator_saturated and verdict.reasons == [
        "load generator saturated: started 100 chargers in 6.0 s, not 2.0 s (50/s)"
    ]
    search = RateSearch(config)
    search.record(slow_spawn)
    answer, why, by_generator = search.answer()
    assert answer is None and by_generator and why.startswith(LIMITED_BY_GENERATOR)
    # the CSMS being slow too: the CSMS's failure, not the generator's
    both = dataclasses.replace(rate_step(50.0, config, 5.0), spawn_seconds=6.0)
    assert not judge_rate(both, config).generator_saturated


def test_rate_search_options_are_checked() -> None:
    with pytest.raises(ValueError, match="--capacity-search 'rates'"):
        CapacityConfig(mode="rates")
    with pytest.raises(ValueError, match="--connect-rate-max"):
        CapacityConfig(rate_start=10.0, rate_max=5.0)
    assert CapacityConfig(mode="both").searches_connect_rate
    assert not CapacityConfig(mode="connect-rate").searches_chargers
    config = CapacityConfig(start=10, max_chargers=50)
    assert [config.rate_step_size(r) for r in (1.0, 3.0, 4.5, 100.0)] == [20, 30, 45, 50]


def test_a_rate_step_past_a_connection_ceiling_is_repeated_with_fewer_chargers() -> None:
    """Ten seconds of arrivals at 20/s are 200 chargers: a CSMS that holds 150 refuses 50 of
    them while it boots the rest at the pace offered. That measured its concurrency, not its
    admission rate: the same rate again with at most 120 chargers, and then judged."""
    config = CapacityConfig(max_chargers=1_000, rate_start=20.0)
    search = RateSearch(config)
    full = rate_step(20.0, config, 1000.0)
    assert full.chargers == 200
    refused = dataclasses.replace(
        full,
        booted=150,
        ramp=dataclasses.replace(full.ramp, connect_attempts=250, connect_failures=50),
    )
    verdict = search.record(refused)
    assert not verdict.ok and verdict.reasons[0] == (
        "the CSMS held only 150 of 200 chargers: rate steps now use at most 120 "
        "(not judged as a rate)"
    )
    assert search.next_rate() == 20.0 and search.chargers_for(20.0) == 120
    assert search.bad is None and search.steps == []
    capped = rate_step(20.0, dataclasses.replace(config, max_chargers=120), 1000.0)
    assert capped.chargers == 120
    assert search.record(capped).ok and search.good == 20.0
    assert search.next_rate() == 40.0 and search.chargers_for(40.0) == 120
    # too few left to show a backlog: an ordinary failure of the rate
    small = CapacityConfig(max_chargers=1_000, rate_start=1.0)
    tiny = rate_step(1.0, small, 1000.0)
    few = dataclasses.replace(
        tiny, booted=8, ramp=dataclasses.replace(tiny.ramp, connect_failures=12)
    )
    lone = RateSearch(small)
    lone.record(few)
    assert lone.done and lone.answer()[0] is None
