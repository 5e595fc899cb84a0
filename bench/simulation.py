"""Simulated listeners: does the taste loop (model/taste.py) learn a person, and what do they gain?

Each listener has a hidden linear taste w* ~ N(0, I) over the take features (plans.FEATURES). A round: a
random vibe, four takes drawn from its plan tilted by a Thompson draw of the listener's posterior (no
votes yet: the anonymous plan); the listener votes the take they like best up and the worst down, by
utility w*ᵀx plus choice noise. After 5 / 10 / 20 votes the posterior mean predicts held-out pairwise
choices (two takes of a random vibe). Utility is counted in expectation over a plan's draws (closed form
for the family), so the regret curve is not sampling noise: regret = what the plan tilted by w* itself
would give − what the listener is served; an anonymous listener's regret is the first term alone.
`bench/listeners.py` runs 200 of them on the champion's plans; tests/test_taste.py runs a few on synthetic
plans. It measures the library (model/taste.py, model/plans.py) and ships with neither it nor the service.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayes_beats.model.plans import DEFAULT_TEMPERATURE, FEATURES, PlanDistribution
from bayes_beats.model.taste import Taste


def expected_features(dist: PlanDistribution, served: PlanDistribution) -> np.ndarray:
    """E[features] of a take drawn from `served` (at temperature 1), measured against `dist`'s centre."""
    return np.array(
        [
            (served.log_bpm - dist.log_bpm) / dist.log_bpm_scale,
            2.0 * (served.p_major - dist.p_major),
            served.energy_z - dist.energy_z,
        ]
    )


@dataclass
class Simulation:
    accuracy: dict[int, float]  # votes → mean held-out pairwise accuracy (the listeners' noisy choices)
    agreement: dict[int, float]  # votes → the same against their noiseless preference
    ceiling: float  # the hidden taste itself on the noisy choices: what no posterior can beat
    regret: list[float]  # per round: mean regret of the served plan
    regret_anonymous: list[float]  # per round: mean regret of the anonymous plan
    listeners: int
    rounds: int


def simulate(
    plans: list[PlanDistribution],
    listeners: int = 200,
    rounds: int = 10,
    checkpoints: tuple[int, ...] = (5, 10, 20),
    takes: int = 4,
    choice_noise: float = 0.5,
    held_out: int = 200,
    seed: int = 0,
    temperature: float = DEFAULT_TEMPERATURE,
) -> Simulation:
    """Run the loop for `listeners` hidden tastes over random vibes from `plans` (see the module doc)."""
    rng = np.random.default_rng(seed)
    acc: dict[int, list[float]] = {c: [] for c in checkpoints}
    agree: dict[int, list[float]] = {c: [] for c in checkpoints}
    regret = np.zeros(rounds)
    regret_anon = np.zeros(rounds)
    ceiling = []
    for _ in range(listeners):
        hidden = rng.normal(size=len(FEATURES))
        taste = Taste.prior()
        test = []
        for _ in range(held_out):  # held-out pairs: two anonymous takes of a random vibe, and the choice made
            dist = plans[int(rng.integers(len(plans)))]
            a, b = (dist.features(*d) for d in dist.draws(2, temperature, rng))
            test.append((a - b, (hidden @ (a - b)) + choice_noise * rng.normal() * np.sqrt(2)))
        diffs = np.array([d for d, _ in test])
        noisy = np.array([c for _, c in test]) > 0
        clean = diffs @ hidden > 0
        ceiling.append(float(np.mean(clean == noisy)))

        for r in range(rounds):
            dist = plans[int(rng.integers(len(plans)))]
            draw = taste.sample(rng) if taste.votes else None
            served = dist.tilt(draw)
            best = hidden @ expected_features(dist, dist.tilt(hidden))
            regret[r] += best - hidden @ expected_features(dist, served)
            regret_anon[r] += best
            x = np.array([dist.features(*d) for d in served.draws(takes, temperature, rng)])
            utility = x @ hidden + choice_noise * rng.normal(size=takes)
            for take, vote in ((int(utility.argmax()), 1), (int(utility.argmin()), -1)):
                taste = taste.update(x[take], vote)
                if taste.votes in acc:
                    pred = diffs @ taste.mean > 0
                    acc[taste.votes].append(float(np.mean(pred == noisy)))
                    agree[taste.votes].append(float(np.mean(pred == clean)))
    return Simulation(
        accuracy={c: round(float(np.mean(v)), 4) for c, v in acc.items() if v},
        agreement={c: round(float(np.mean(v)), 4) for c, v in agree.items() if v},
        ceiling=round(float(np.mean(ceiling)), 4),
        regret=[round(float(v / listeners), 4) for v in regret],
        regret_anonymous=[round(float(v / listeners), 4) for v in regret_anon],
        listeners=listeners,
        rounds=rounds,
    )
