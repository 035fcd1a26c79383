"""Profiles: parsing and the pure decisions they make."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.profiles import ProfileError, SessionPlan, parse_profile


def test_single_profiles_and_default_mix() -> None:
    assert parse_profile("idle").weights == {"idle": 1.0}
    assert parse_profile("mixed").weights == {"idle": 40, "sessions": 50, "remote": 10}
    mix = parse_profile("mixed:idle=1, sessions=3")
    rng = random.Random(7)
    drawn = [mix.choose(rng) for _ in range(4000)]
    assert set(drawn) == {"idle", "sessions"}
    assert 0.70 < drawn.count("sessions") / len(drawn) < 0.80


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "busy",
        "mixed:",
        "mixed:idle=x",
        "mixed:fly=1",
        "mixed:idle=0",
        "mixed:idle=-1,sessions=2",
    ],
)
def test_bad_profiles_say_why(bad: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile(bad)
    assert "\n" not in str(caught.value) and str(caught.value)


@given(seed=st.integers(0, 2**32 - 1))
def test_session_plan_draws_plausible_sessions(seed: int) -> None:
    rng = random.Random(seed)
    plan = SessionPlan(mean_interarrival_s=300, mean_stay_s=900, min_stay_s=60)
    assert plan.next_arrival(rng) >= 0
    assert plan.next_stay(rng) >= 60
    ev = plan.new_ev(rng)
    assert 40_000 <= ev.capacity_wh <= 100_000
    assert 0.10 <= ev.soc <= 0.60 and ev.target_soc >= 0.8


def test_arrivals_average_to_the_mean() -> None:
    rng = random.Random(1)
    plan = SessionPlan(mean_interarrival_s=300)
    mean = sum(plan.next_arrival(rng) for _ in range(20_000)) / 20_000
    assert mean == pytest.approx(300, rel=0.05)
