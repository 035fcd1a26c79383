"""The EV battery and meter model, on a fake clock."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.physics import (
    EV,
    TAPER_FLOOR,
    ChargingPhysics,
    EnergyRegister,
    FakeClock,
    ScaledClock,
)


def test_power_is_limited_by_charger_and_ev() -> None:
    clock = FakeClock()
    slow_charger = ChargingPhysics(EV(max_power_w=150_000), EnergyRegister(), 50_000, clock.now())
    assert slow_charger.power_w == 50_000
    slow_car = ChargingPhysics(EV(max_power_w=40_000), EnergyRegister(), 100_000, clock.now())
    assert slow_car.power_w == 40_000


def test_full_power_below_80_percent_then_taper() -> None:
    clock = FakeClock()
    ev = EV(capacity_wh=50_000, soc=0.70, max_power_w=100_000)
    physics = ChargingPhysics(ev, EnergyRegister(), 100_000, clock.now())
    assert physics.power_w == 100_000
    # 3 minutes at 100 kW = 5 kWh = 10 % of the battery: now at 80 %.
    physics.advance(clock.advance(180))
    assert ev.soc == pytest.approx(0.80, abs=1e-6)
    powers = []
    for _ in range(40):
        physics.advance(clock.advance(60))
        powers.append(physics.power_w)
    assert all(a >= b for a, b in itertools.pairwise(powers))  # tapering
    assert powers[0] < 100_000
    assert ev.soc <= 1.0


def test_taper_reaches_the_floor_and_stops_at_target() -> None:
    ev = EV(capacity_wh=10_000, soc=0.999999, max_power_w=10_000, target_soc=1.0)
    assert 0 < ev.acceptance_w() <= 10_000 * TAPER_FLOOR + 1
    ev = EV(capacity_wh=10_000, soc=0.5, target_soc=0.6, max_power_w=10_000)
    clock = FakeClock()
    register = EnergyRegister(1000)
    physics = ChargingPhysics(ev, register, 22_000, clock.now())
    physics.advance(clock.advance(3600 * 5))
    assert ev.full and ev.soc == pytest.approx(0.6)
    assert register.wh == pytest.approx(1000 + 1000)  # exactly 10 % of 10 kWh delivered
    assert physics.power_w == 0


def test_suspended_evse_delivers_nothing() -> None:
    clock = FakeClock()
    register = EnergyRegister()
    physics = ChargingPhysics(EV(), register, 50_000, clock.now())
    physics.suspended = True
    assert physics.advance(clock.advance(600)) == 0
    assert register.wh == 0


def test_register_refuses_to_go_backwards() -> None:
    register = EnergyRegister(10)
    with pytest.raises(ValueError):
        register.add(-1)
    with pytest.raises(ValueError):
        EnergyRegister(-5)
    with pytest.raises(ValueError):
        FakeClock().advance(-1)
    with pytest.raises(ValueError):
        EV(soc=1.5)


@given(
    steps=st.lists(st.floats(min_value=0, max_value=900), min_size=1, max_size=50),
    soc=st.floats(min_value=0, max_value=1),
    rating=st.floats(min_value=1_000, max_value=350_000),
    start_wh=st.floats(min_value=0, max_value=1e9),
)
def test_register_and_soc_are_monotonic(
    steps: list[float], soc: float, rating: float, start_wh: float
) -> None:
    clock = FakeClock()
    ev = EV(soc=soc)
    register = EnergyRegister(start_wh)
    physics = ChargingPhysics(ev, register, rating, clock.now())
    last_wh, last_soc = register.wh, ev.soc
    for step in steps:
        before = clock.now()
        delivered = physics.advance(clock.advance(step))
        elapsed = clock.now() - before  # the float clock's own idea of the step
        assert delivered >= 0
        assert register.wh >= last_wh and ev.soc >= last_soc
        assert delivered <= rating * elapsed / 3600 * (1 + 1e-9) + 1e-9  # never above rating
        assert 0 <= physics.power_w <= rating
        last_wh, last_soc = register.wh, ev.soc
    assert ev.soc <= ev.target_soc + 1e-9


def test_scaled_clock_runs_faster() -> None:
    clock = ScaledClock(60)
    assert clock.real_seconds(60) == 1
    first = clock.now()
    assert clock.now() >= first
    with pytest.raises(ValueError):
        ScaledClock(0)


def test_scaled_clock_maps_wall_clock_times() -> None:
    """A CSMS's expiry one real minute ahead comes due after one real minute: ten
    simulated minutes on a clock ten times faster."""
    clock = ScaledClock(10)
    due = clock.from_wall(time.time() + 60)
    assert due - clock.now() == pytest.approx(600, abs=1)
    assert clock.real_seconds(due - clock.now()) == pytest.approx(60, abs=0.1)
