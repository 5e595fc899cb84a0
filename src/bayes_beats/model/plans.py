"""A vibe's plan as a distribution, the takes drawn from it, and a listener's taste tilting it.

The planner (model/vibe.py) gives, per vibe, a Gaussian over log-tempo, a Gaussian over energy's normal
score (energy is a percentile of the corpus's, so its normal score is ~N(0, 1) over the clips) and a
Bernoulli for major. `num_variations` takes are stratified draws of it (a Latin hypercube over the three
uniforms: four takes are four different readings, not four seeds of one); `temperature` scales the
spread (0: every take plays the mode).

A listener's taste is linear in a take's features (`features`): where the take sits relative to the
vibe's own centre, in corpus units (log-tempo over the corpus's sd, major ±1 minus the expected, energy's
normal score). Tilting the plan by exp(wᵀx) keeps it in its family in closed form: a Gaussian's mean moves
by variance × weight, a Bernoulli's logit by the weight × 2. A clear vibe (a narrow plan) therefore moves
little, an ambiguous one more: the listener still hears the vibe, leaning toward what they liked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import norm, qmc

FEATURES = ("tempo", "mode", "energy")  # a take's taste features, in this order
INTERVAL = 0.8  # the plan's band on the page and in the calibration check: its central 80 %
# Takes drawn at 1 span the calibrated plan, and cost ~20 % clap_local (a take far from the words' centre
# matches them less); at 0.6, with the first take on the mode, they spread 2–3× what seeds alone do, at
# ~2 % (docs/bayes.md)
DEFAULT_TEMPERATURE = 0.6


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass(frozen=True)
class PlanDistribution:
    """One vibe's predictive distribution over its metas."""

    log_bpm: float  # mean of ln(bpm)
    log_bpm_sd: float
    energy_z: float  # mean of energy's normal score
    energy_sd: float
    p_major: float
    log_bpm_scale: float  # the corpus's sd of ln(bpm): the tempo feature's unit
    valence: float = 0.0
    arousal: float = 0.0
    words: tuple[str, ...] = ()  # the mood words it read the vibe as, nearest first

    def entropy(self) -> float:
        """Differential entropy of the log-tempo and energy Gaussians plus the mode's, in nats."""
        gauss = sum(
            0.5 * math.log(2 * math.pi * math.e * max(sd, 1e-6) ** 2) for sd in (self.log_bpm_sd, self.energy_sd)
        )
        p = min(max(self.p_major, 1e-9), 1 - 1e-9)
        return gauss - p * math.log(p) - (1 - p) * math.log(1 - p)

    def tilt(self, taste: np.ndarray | None) -> PlanDistribution:
        """The plan times exp(tasteᵀ features), renormalised (exact for this family)."""
        if taste is None:
            return self
        w_tempo, w_mode, w_energy = (float(v) for v in taste)
        return replace(
            self,
            log_bpm=self.log_bpm + self.log_bpm_sd**2 * w_tempo / self.log_bpm_scale,
            energy_z=self.energy_z + self.energy_sd**2 * w_energy,
            p_major=_sigmoid(_logit(self.p_major) + 2.0 * w_mode),
        )

    def mode(self) -> tuple[float, bool, float]:
        """The most likely plan: (bpm, major, energy percentile)."""
        return math.exp(self.log_bpm), self.p_major > 0.5, float(norm.cdf(self.energy_z))

    def draws(self, n: int, temperature: float, rng: np.random.Generator) -> list[tuple[float, bool, float]]:
        """`n` takes (bpm, major, energy percentile): the first plays the plan's mode (the most likely
        reading: a single take is the vibe's best guess), the others are stratified draws, one per row of a
        Latin hypercube, so together they cover the plan's range. `temperature` scales the Gaussians' sd
        and sharpens (< 1) or flattens (> 1) the mode's odds; 0 gives the mode n times."""
        if temperature == 0 or n == 1:
            return [self.mode()] * n
        return [self.mode(), *self._stratified(n - 1, temperature, rng)]

    def _stratified(self, n: int, temperature: float, rng: np.random.Generator) -> list[tuple[float, bool, float]]:
        u = qmc.LatinHypercube(d=3, seed=rng).random(n).clip(1e-4, 1 - 1e-4)
        p_major = _sigmoid(_logit(self.p_major) / temperature)
        return [
            (
                math.exp(self.log_bpm + temperature * self.log_bpm_sd * norm.ppf(a)),
                bool(b < p_major),
                float(norm.cdf(self.energy_z + temperature * self.energy_sd * norm.ppf(c))),
            )
            for a, b, c in u
        ]

    def features(self, bpm: float, major: bool, energy: float) -> np.ndarray:
        """A take's taste features: where it sits relative to this plan's centre, in corpus units."""
        return np.array(
            [
                (math.log(bpm) - self.log_bpm) / self.log_bpm_scale,
                (1.0 if major else -1.0) - (2.0 * self.p_major - 1.0),
                float(norm.ppf(min(max(energy, 1e-4), 1 - 1e-4))) - self.energy_z,
            ]
        )

    def summary(self) -> dict:
        """What the page shows: the tempo and energy bands (central 80 %), P(major), the reading."""
        z = float(norm.ppf(0.5 + INTERVAL / 2))

        def band(mean: float, sd: float, to) -> dict:
            return {"low": round(to(mean - z * sd), 3), "mid": round(to(mean), 3), "high": round(to(mean + z * sd), 3)}

        return {
            "valence": round(self.valence, 3),
            "arousal": round(self.arousal, 3),
            "words": list(self.words),
            "bpm": band(self.log_bpm, self.log_bpm_sd, math.exp),
            "p_major": round(self.p_major, 3),
            "energy": band(self.energy_z, self.energy_sd, lambda v: float(norm.cdf(v))),
            "entropy": round(self.entropy(), 3),
        }
