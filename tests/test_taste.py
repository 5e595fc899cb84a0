"""The plan as a distribution and a listener's taste as a posterior: the math, without a model."""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest
from conftest import REPO
from scipy.stats import norm

from bayes_beats.model.plans import PlanDistribution
from bayes_beats.model.taste import Taste


def bench_module(name: str):
    """A module of bench/ (the benchmarks' code, outside the library), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


PLAN = PlanDistribution(
    log_bpm=math.log(110), log_bpm_sd=0.15, energy_z=0.2, energy_sd=0.8, p_major=0.7, log_bpm_scale=0.19
)


def test_takes_are_stratified_draws_and_temperature_zero_is_the_mode():
    draws = PLAN.draws(4, 1.0, np.random.default_rng(0))
    assert draws[0] == PLAN.mode()  # the first take is the most likely reading
    quantiles = norm.cdf((np.log([d[0] for d in draws[1:]]) - PLAN.log_bpm) / PLAN.log_bpm_sd)
    assert sorted(np.floor(quantiles * 3).astype(int)) == [0, 1, 2]  # the others: one per third of the tempo plan
    assert PLAN.draws(1, 1.0, np.random.default_rng(0)) == [PLAN.mode()]
    assert PLAN.draws(3, 0.0, np.random.default_rng(0)) == [PLAN.mode()] * 3
    assert PLAN.mode()[0] == pytest.approx(110) and PLAN.mode()[1] is True
    assert np.allclose(PLAN.features(*PLAN.mode())[[0, 2]], 0) and PLAN.features(*PLAN.mode())[1] == pytest.approx(0.6)


def test_the_closed_form_tilt_is_the_tilted_distribution():
    """exp(wᵀx)-weighted draws of the plan have the tilted plan's moments."""
    w = np.array([0.8, -0.5, 0.6])
    rng = np.random.default_rng(1)
    n = 200_000
    log_bpm = PLAN.log_bpm + PLAN.log_bpm_sd * rng.normal(size=n)
    major = rng.random(n) < PLAN.p_major
    energy_z = PLAN.energy_z + PLAN.energy_sd * rng.normal(size=n)
    x = np.stack([(log_bpm - PLAN.log_bpm) / PLAN.log_bpm_scale, np.where(major, 1.0, -1.0), energy_z], axis=1)
    weight = np.exp(x @ w)
    weight /= weight.sum()
    tilted = PLAN.tilt(w)
    assert weight @ log_bpm == pytest.approx(tilted.log_bpm, abs=2e-3)
    assert weight @ major == pytest.approx(tilted.p_major, abs=5e-3)
    assert weight @ energy_z == pytest.approx(tilted.energy_z, abs=1e-2)
    assert PLAN.tilt(None) is PLAN and PLAN.tilt(np.zeros(3)) == PLAN


def test_a_wider_plan_has_more_entropy_and_its_band_holds_the_mode():
    wide = PlanDistribution(**{**PLAN.__dict__, "log_bpm_sd": 0.3, "p_major": 0.5})
    assert wide.entropy() > PLAN.entropy()
    band = PLAN.summary()["bpm"]
    assert band["low"] < 110 < band["high"] and band["mid"] == pytest.approx(110, abs=0.01)


def test_votes_move_the_posterior_toward_what_was_liked_and_narrow_it():
    fast, slow = np.array([1.5, 0.0, 0.0]), np.array([-1.5, 0.0, 0.0])
    taste = Taste.prior().update(fast, 1).update(slow, -1).update(fast, 1)
    assert taste.votes == 3 and taste.mean[0] > 0.5 and abs(taste.mean[1]) < 1e-9
    assert taste.cov[0, 0] < 1.0 == Taste.prior().cov[0, 0]
    assert taste.p_up(fast) > 0.7 > 0.3 > taste.p_up(slow)
    again = Taste.from_votes([(fast, 1), (slow, -1), (fast, 1)])
    assert np.allclose(again.mean, taste.mean) and np.allclose(again.cov, taste.cov)
    assert set(taste.summary()) == {"tempo", "mode", "energy"}
    with pytest.raises(ValueError, match="1 \\(up\\) or -1"):
        taste.update(fast, 0)


def test_simulated_listeners_are_learned_and_served_better_than_anonymous():
    rng = np.random.default_rng(0)
    plans = [
        PlanDistribution(
            log_bpm=math.log(rng.uniform(70, 140)),
            log_bpm_sd=0.17,
            energy_z=rng.normal(),
            energy_sd=0.8,
            p_major=rng.uniform(0.1, 0.9),
            log_bpm_scale=0.19,
        )
        for _ in range(12)
    ]
    sim = bench_module("simulation").simulate(plans, listeners=20, rounds=10, held_out=100, seed=1, temperature=1.0)
    assert sim.accuracy[5] > 0.6 and sim.accuracy[20] >= 0.75 and sim.accuracy[20] >= sim.accuracy[5]
    assert sim.accuracy[20] <= sim.ceiling + 0.02 and sim.agreement[20] > sim.accuracy[20]  # noise bounds it
    assert sim.regret[0] == pytest.approx(sim.regret_anonymous[0])  # no votes yet: the anonymous plan
    assert np.mean(sim.regret[-3:]) < 0.6 * np.mean(sim.regret_anonymous[-3:])
