"""The variational prompt layer and the planner: pipeline components saved and loaded with it.

One vibe, several interpretations: the sentence embedding e of the vibe text gets a learned mean
mu = e + f(e) and log-variance; a sample z = mu + temperature * sigma * eps (temperature 0 → mu) both
shifts the DiT's text conditioning (a zero-initialised projection added to every token). Trained with
KL(q(z|e) || N(e, prior_std^2)), so samples stay near what the words mean.

The planner reads the vibe's valence/arousal from the embedding and writes the metas the per-frame
sketch renders: tempo, mode, energy and a progression for the mode.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from bayes_beats.model.plans import PlanDistribution
from bayes_beats.model.sketch import DEFAULT_DEGREES, chords_of, triad
from bayes_beats.music.theory import parse_keyscale


def in_key(chords: torch.Tensor, mode: str) -> bool:
    """Whether every chord ([beats, 12] of ±1, relative to C) is a triad on a degree of C `mode` (in minor,
    V is the harmonic minor's major chord, as `triad` builds it)."""
    allowed = {frozenset(triad(0, mode, degree)) for degree in range(7)}
    return all(frozenset(torch.nonzero(row > 0).flatten().tolist()) in allowed for row in chords)


class VariationalPromptHead(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, embed_dim: int = 384, hidden_dim: int = 256, prior_std: float = 0.5, init_logvar: float = -4.0):
        super().__init__()
        self.mean_head = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))
        self.logvar_head = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))
        self.to_tokens = nn.Linear(embed_dim, embed_dim)  # z → an offset added to every text token
        for layer in (self.mean_head[-1], self.to_tokens):  # starts as the identity: the base is untouched
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.constant_(self.logvar_head[-1].bias, init_logvar)
        nn.init.zeros_(self.logvar_head[-1].weight)

    def forward(self, embedding: torch.Tensor, eps: torch.Tensor | None = None, temperature: float = 1.0):
        """[batch, dim] → (z, mu, logvar) with z = mu + temperature * sigma * eps (reparameterisation).

        `eps` comes from the caller (seeded per step or per request); None or temperature 0 gives z = mu."""
        mu = embedding + self.mean_head(embedding)
        logvar = self.logvar_head(embedding).clamp(-10, 4)
        if eps is None or temperature == 0:
            return mu, mu, logvar
        return mu + temperature * torch.exp(0.5 * logvar) * eps.to(mu), mu, logvar

    def kl(self, embedding: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, sigma^2) || N(embedding, prior_std^2)), mean over batch and dims."""
        prior_var = self.config.prior_std**2
        kl = 0.5 * (math.log(prior_var) - logvar + (logvar.exp() + (mu - embedding) ** 2) / prior_var - 1)
        return kl.mean()

    def condition(self, text_states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """[batch, tokens, dim] + [batch, dim] → conditioned token states."""
        return text_states + self.to_tokens(z)[:, None, :].to(text_states.dtype)


class VibePlanner(ModelMixin, ConfigMixin):
    """Vibe embedding → plan: tempo, mode, energy, and the chords to play.

    Reading: the vibe's valence/arousal is a similarity-weighted mean of anchors' (the corpus's mood tags,
    the vibe words and hand-placed scenes, embedded by the same text encoder: softmax of cosine / `tau`), so free text
    (scene descriptions, captions, a few typed words) is read as well as the training captions are.
    The reading is calibrated on the training captions (reading = c + d · truth per axis, inverted), and
    the metas come from regressions fit on the corpus's clips, rescaled so that their spread over the
    clips equals the corpus's own (a point plan otherwise regresses to the mean: a planner fit on template
    captions without it planned 85–119 BPM where the corpus spans 77–126 for the same moods).
    Nothing here is trained by gradient: `fit` builds it from the `encode` cache."""

    @register_to_config
    def __init__(
        self,
        embed_dim: int = 384,
        n_anchors: int = 1,
        n_progressions: int = 1,
        progression_beats: int = 16,
        tau: float = 0.2,
        reading: tuple[float, ...] = (0.0, 1.0, 0.0, 1.0),  # c_v, d_v, c_a, d_a
        log_bpm: tuple[float, ...] = (4.6, 0.0, 0.0),  # intercept, per valence, per arousal
        energy: tuple[float, ...] = (0.0, 0.0, 0.0),  # the energy percentile's normal score, likewise
        major: tuple[float, ...] = (0.0, 0.0, 0.0),  # logit of major, likewise
        log_bpm_sd: tuple[float, ...] = (0.15, 0.0),  # the plan's sd: sqrt(s0² + k · the reading's variance)
        energy_sd: tuple[float, ...] = (1.0, 0.0),  # likewise, of energy's normal score
        log_bpm_scale: float = 0.15,  # the corpus's sd of ln(bpm): the unit of a taste's tempo feature
        anchor_words: tuple[str, ...] = (),  # the anchors' mood words, in buffer order
    ):
        super().__init__()
        self.register_buffer("anchor_embeddings", torch.zeros(n_anchors, embed_dim))
        self.register_buffer("anchor_va", torch.zeros(n_anchors, 2))
        self.register_buffer("progressions", torch.zeros(n_progressions, progression_beats, 12))  # relative to C
        self.register_buffer("progression_major", torch.zeros(n_progressions, dtype=torch.bool))

    def weights(self, embedding: torch.Tensor) -> torch.Tensor:
        """[batch, dim] → [batch, anchors]: how much the vibe reads as each mood anchor (softmax of cosine)."""
        e = nn.functional.normalize(embedding.float(), dim=-1)
        a = nn.functional.normalize(self.anchor_embeddings.float(), dim=-1)
        return torch.softmax(e @ a.T / self.config.tau, dim=-1)

    def read_raw(self, embedding: torch.Tensor) -> torch.Tensor:
        """[batch, dim] → [batch, 2]: the anchors' (valence, arousal), weighted by similarity."""
        return self.weights(embedding) @ self.anchor_va.float()

    def reading_variance(self, embedding: torch.Tensor) -> torch.Tensor:
        """[batch, dim] → [batch, 2]: how far apart the anchors it reads are, per axis (calibrated units).
        Mixed cues ("a sunny funeral") weigh anchors far apart: a wide reading, so a wide plan."""
        w, va = self.weights(embedding), self.anchor_va.float()
        mean = w @ va
        var = w @ va**2 - mean**2
        d_v, d_a = self.config.reading[1], self.config.reading[3]
        return var.clamp(min=0) / var.new_tensor([d_v**2, d_a**2])  # on the embedding's device (a GPU)

    def words(self, embedding: torch.Tensor, k: int = 3) -> list[tuple[str, ...]]:
        """The `k` mood words each vibe reads as most, nearest first (scene anchors read, but are not words)."""
        words = self.config.anchor_words
        if not words:
            return [()] * len(embedding)
        top = self.weights(embedding)[:, : len(words)].topk(min(k, len(words)), dim=-1).indices
        return [tuple(self.config.anchor_words[int(i)] for i in row) for row in top]

    def read(self, embedding: torch.Tensor) -> torch.Tensor:
        """[batch, dim] → [batch, 2] calibrated (valence, arousal) in [−1, 1]."""
        raw = self.read_raw(embedding)
        c_v, d_v, c_a, d_a = self.config.reading
        return torch.stack([(raw[:, 0] - c_v) / d_v, (raw[:, 1] - c_a) / d_a], dim=-1).clamp(-1, 1)

    def forward(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """[batch, dim] → {valence, arousal, bpm, p_major, energy (percentile in [0, 1])}, each [batch]."""
        va = self.read(embedding)

        def linear(coef) -> torch.Tensor:
            return coef[0] + coef[1] * va[:, 0] + coef[2] * va[:, 1]

        def sd(coef, slopes) -> torch.Tensor:
            spread = (va.new_tensor(slopes[1:]) ** 2 * self.reading_variance(embedding)).sum(-1)
            return (coef[0] ** 2 + coef[1] * spread).sqrt()

        log_bpm, energy_z = linear(self.config.log_bpm), linear(self.config.energy)
        return {
            "valence": va[:, 0],
            "arousal": va[:, 1],
            "bpm": log_bpm.exp(),
            "p_major": torch.sigmoid(linear(self.config.major)),
            "energy": torch.special.ndtr(energy_z),  # the normal CDF; no host sync to validate it
            "log_bpm": log_bpm,
            "log_bpm_sd": sd(self.config.log_bpm_sd, self.config.log_bpm),
            "energy_z": energy_z,
            "energy_sd": sd(self.config.energy_sd, self.config.energy),
        }

    def distributions(self, embedding: torch.Tensor) -> list[PlanDistribution]:
        """[batch, dim] → each vibe's plan as a distribution (model/plans.py)."""
        out = {k: v.tolist() for k, v in self(embedding).items()}
        return [
            PlanDistribution(
                log_bpm=out["log_bpm"][i],
                log_bpm_sd=out["log_bpm_sd"][i],
                energy_z=out["energy_z"][i],
                energy_sd=out["energy_sd"][i],
                p_major=out["p_major"][i],
                log_bpm_scale=self.config.log_bpm_scale,
                valence=out["valence"][i],
                arousal=out["arousal"][i],
                words=words,
            )
            for i, words in enumerate(self.words(embedding))
        ]

    def progression(self, major: bool, rng: np.random.Generator) -> torch.Tensor:
        """A progression the corpus holds for this mode, relative to C ([beats, 12] of ±1), drawn by `rng`."""
        pool = torch.nonzero(self.progression_major == major).flatten()
        if len(pool) == 0:
            pool = torch.arange(len(self.progressions))
        return self.progressions[int(pool[int(rng.integers(len(pool)))])].float()

    @classmethod
    def fit(
        cls,
        cache: dict[str, torch.Tensor],
        keyscales: list[str],
        clip_seconds: float,
        **config,
    ) -> VibePlanner:
        """Build from the `encode` cache of the training split: vibe-caption embeddings with their clips'
        valence/arousal (the reading's calibration), the clips' metas (the regressions) and chords (the
        progressions: each clip's first `progression_beats` beats, relative to its key, from clips that
        hold that many (the last beat held repeats in shorter ones) and play only chords of their key — a
        chord read off by one (the relative minor's, a passing note's) made the drawn progression read as
        another key: key right on 79 % of fixed-key clips with the whole bank)."""
        from scipy.stats import norm
        from sklearn.linear_model import LinearRegression, LogisticRegression

        beats = config.get("progression_beats", 16)
        held = (clip_seconds - cache["origin"]) * cache["bpm"] / 60.0
        long_enough = torch.nonzero(held >= beats).flatten().tolist() or list(range(len(held)))  # short clips: all
        bank = []  # (relative progression, is major) of the clips whose every chord is in their key
        for i in long_enough:
            tonic, mode = parse_keyscale(keyscales[i])
            first = cache["chords"][i, torch.arange(beats).clamp(max=cache["chords"].shape[1] - 1)].float()
            relative = torch.roll(first, shifts=-tonic, dims=-1)
            if in_key(relative, mode):
                bank.append((relative, mode == "major"))
        if not bank:  # no clip plays plainly in its key: the default progression in both modes
            bank = [(chords_of(DEFAULT_DEGREES, 0, mode), mode == "major") for mode in ("major", "minor")]
        anchors = cache["anchor_embeddings"]
        planner = cls(embed_dim=anchors.shape[1], n_anchors=len(anchors), n_progressions=len(bank), **config)
        planner.anchor_embeddings.copy_(anchors)
        planner.anchor_va.copy_(cache["anchor_va"])
        for row, (relative, major) in enumerate(bank):
            planner.progressions[row] = relative
            planner.progression_major[row] = major
        truth = torch.stack([cache["valence"], cache["arousal"]], dim=-1).numpy()
        captions = cache["embeddings"][:, 1:]  # the vibe captions (variant 0 is the style caption)
        read = torch.stack([planner.read_raw(captions[:, k]) for k in range(captions.shape[1])], dim=1).numpy()
        reading = []
        for axis in (0, 1):
            fit = LinearRegression().fit(np.repeat(truth[:, axis], read.shape[1])[:, None], read[..., axis].ravel())
            reading += [float(fit.intercept_), float(fit.coef_[0])]

        def spread_matched(y: np.ndarray) -> tuple[float, float, float]:
            fit = LinearRegression().fit(truth, y)
            pred = fit.predict(truth)
            scale = y.std() / max(pred.std(), 1e-6)  # the plan spans the corpus, not its conditional mean
            return (float(y.mean() - scale * fit.coef_ @ truth.mean(0)), *(float(c) * scale for c in fit.coef_))

        log_bpm = np.log(cache["bpm"].numpy())
        energy = norm.ppf(cache["energy"].numpy().clip(0.005, 0.995))
        planner.register_to_config(
            reading=tuple(reading),
            log_bpm=spread_matched(log_bpm),
            energy=spread_matched(energy),
            log_bpm_scale=float(log_bpm.std()),
        )
        # P(major) from what the planner reads in the captions, not from the clips' true valence/arousal:
        # a text reading is noisier than the truth, and a fit on the truth was overconfident on text
        # (held out, P(major) 0.1 came true 38 % of the time). From the valence reading alone: on the
        # corpus's truth arousal hardly moves mode (logit slopes 2.9 valence, 0.2 arousal), but fit on
        # readings it took 0.8, standing in for how the captions' calm words read as sad, and on free text
        # it sent calm, pleasant scenes to minor (clear-valence prompts: 0.94 from valence alone against
        # 0.90 with arousal, docs/ablation.md)
        readings = torch.cat([planner.read(captions[:, k]) for k in range(captions.shape[1])]).numpy()
        mode = LogisticRegression().fit(readings[:, :1], np.tile(cache["major"].numpy() > 0.5, captions.shape[1]))
        planner.register_to_config(major=(float(mode.intercept_[0]), float(mode.coef_[0][0]), 0.0))
        # the plan's spread, fit by likelihood of each clip's metas given each of its captions' readings
        planned = [planner(captions[:, k]) for k in range(captions.shape[1])]
        variance = torch.cat([planner.reading_variance(captions[:, k]) for k in range(captions.shape[1])]).numpy()
        for name, y in (("log_bpm", log_bpm), ("energy", energy)):
            mean = torch.cat([p["log_bpm" if name == "log_bpm" else "energy_z"] for p in planned]).numpy()
            slopes = np.array(planner.config.log_bpm[1:] if name == "log_bpm" else planner.config.energy[1:])
            s0, k = fit_spread(np.tile(y, captions.shape[1]), mean, variance @ slopes**2)
            planner.register_to_config(**{f"{name}_sd": (s0, k)})
        return planner


def fit_spread(y: np.ndarray, mean: np.ndarray, spread: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood (s0, k) of y ~ N(mean, s0² + k · spread), k ≥ 0: a floor of spread for every
    vibe plus a share that grows with how mixed its reading is."""
    from scipy.optimize import minimize

    r2 = (y - mean) ** 2

    def nll(theta: np.ndarray) -> float:
        var = np.exp(2 * theta[0]) + np.exp(theta[1]) * spread
        return float(0.5 * np.mean(np.log(var) + r2 / var))

    start = np.array([0.5 * np.log(r2.mean()), np.log(1e-3)])
    best = minimize(nll, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-8, "maxiter": 2000}).x
    return float(np.exp(best[0])), float(np.exp(best[1]))
