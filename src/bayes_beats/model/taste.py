"""A listener's taste as a posterior: Bayesian probit regression of their votes on a take's features.

P(vote up | take x) = Φ(wᵀx), with w ~ N(0, prior_sd² I) a priori and the Gaussian posterior updated after
each vote by assumed-density filtering (moment matching, the closed form of AdPredictor / TrueSkill): no
optimiser, a few flops per vote, and the posterior is a pure function of the votes in order — so the
vote table is the one source of truth and nothing is lost when votes arrive concurrently.

The features are `plans.FEATURES` (tempo, mode, energy relative to the vibe's own plan), so w reads as
"faster / more major / more intense than the vibe asks for". A posterior draw (Thompson sampling) tilts
the next plan: the listener hears what they liked, and keeps exploring while the posterior is wide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from bayes_beats.model.plans import FEATURES

PRIOR_SD = 1.0


def check_vote(vote: int) -> int:
    """A vote is +1 or -1: the one check, for the posterior, the API and the store."""
    if isinstance(vote, bool) or vote not in (1, -1):
        raise ValueError(f"a vote is 1 (up) or -1 (down), got {vote!r}")
    return vote


@dataclass(frozen=True)
class Taste:
    mean: np.ndarray  # [features]
    cov: np.ndarray  # [features, features]
    votes: int = 0

    @classmethod
    def prior(cls, sd: float = PRIOR_SD) -> Taste:
        return cls(np.zeros(len(FEATURES)), np.eye(len(FEATURES)) * sd**2, 0)

    @classmethod
    def from_votes(cls, votes: Iterable[tuple[np.ndarray, int]], sd: float = PRIOR_SD) -> Taste:
        """The posterior after `votes` — (features, +1 | −1) — in the order given."""
        taste = cls.prior(sd)
        for x, vote in votes:
            taste = taste.update(x, vote)
        return taste

    def update(self, x: np.ndarray, vote: int) -> Taste:
        """One vote's ADF update of the probit posterior (exact moments of the tilted Gaussian)."""
        check_vote(vote)
        x = np.asarray(x, dtype=float)
        sx = self.cov @ x
        s = np.sqrt(1.0 + x @ sx)
        t = vote * (self.mean @ x) / s
        v = np.exp(-0.5 * t * t - 0.5 * np.log(2 * np.pi) - log_ndtr(t))  # φ(t) / Φ(t), stable for t ≪ 0
        w = v * (v + t)
        mean = self.mean + vote * v * sx / s
        cov = self.cov - w * np.outer(sx, sx) / (s * s)
        return Taste(mean, (cov + cov.T) / 2, self.votes + 1)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One posterior draw (Thompson sampling)."""
        return rng.multivariate_normal(self.mean, self.cov, method="cholesky")

    def p_up(self, x: np.ndarray) -> float:
        """Posterior predictive P(up | x) = Φ(meanᵀx / sqrt(1 + xᵀΣx))."""
        x = np.asarray(x, dtype=float)
        return float(np.exp(log_ndtr((self.mean @ x) / np.sqrt(1.0 + x @ self.cov @ x))))

    def summary(self) -> dict:
        """Per feature: posterior mean and sd (what GET /listener answers)."""
        sd = np.sqrt(np.diag(self.cov))
        return {
            name: {"mean": round(float(m), 4), "sd": round(float(s), 4)}
            for name, m, s in zip(FEATURES, self.mean, sd, strict=True)
        }
