"""Is the planner's distribution honest? Measured on held-out clips (the `encode` cache's validation split):
each clip's measured tempo, energy and mode against the plan read from each of its vibe captions.

- NLL per meta against a point planner with a fixed spread (the same means, one sd fit on the training
  clips): what reading the spread per vibe buys;
- coverage: the share of true values inside the plan's central 80 % interval (calibrated: 75–85 %);
- mode: P(major) in bins against the share that is major (a reliability table), expected calibration
  error and Brier score;
- entropy: the plan's mean entropy on committed clear and mixed prompts (resources/plan_prompts.json):
  a vibe with mixed cues should get a wider plan than a clear one.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from scipy.stats import norm

from bayes_beats.model.plans import INTERVAL

KEYS = ("embeddings", "bpm", "energy", "major")
METAS = {"tempo": ("log_bpm", "log_bpm_sd"), "energy": ("energy_z", "energy_sd")}


def plan_prompts() -> dict[str, list[str]]:
    return json.loads(files("bayes_beats").joinpath("resources/plan_prompts.json").read_text())


def read_cache(path: str | Path, keys: tuple[str, ...] = KEYS) -> dict[str, torch.Tensor]:
    """Only `keys` of an `encode` cache (by default what calibration needs), never the latents."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in keys}


def _truths(cache: dict[str, torch.Tensor], captions: int) -> dict[str, np.ndarray]:
    return {
        "tempo": np.tile(np.log(cache["bpm"].numpy()), captions),
        "energy": np.tile(norm.ppf(cache["energy"].numpy().clip(0.005, 0.995)), captions),
        "major": np.tile(cache["major"].numpy() > 0.5, captions),
    }


@torch.no_grad()
def _plans(planner, cache: dict[str, torch.Tensor]) -> tuple[dict[str, np.ndarray], int]:
    """The plan read from every vibe caption (variants 1..) of every clip, caption-major."""
    captions = cache["embeddings"][:, 1:]
    outs = [planner(captions[:, k].to(planner.dtype)) for k in range(captions.shape[1])]
    return {k: torch.cat([o[k] for o in outs]).float().numpy() for k in outs[0]}, captions.shape[1]


def _nll(y: np.ndarray, mean: np.ndarray, sd: np.ndarray | float) -> float:
    return float(np.mean(0.5 * np.log(2 * np.pi * np.square(sd)) + np.square(y - mean) / (2 * np.square(sd))))


def calibration(planner, train_cache: str | Path, heldout_cache: str | Path, bins: int = 5) -> dict:
    train, held = read_cache(train_cache), read_cache(heldout_cache)
    plans_train, k_train = _plans(planner, train)
    plans_held, k_held = _plans(planner, held)
    truth_train, truth_held = _truths(train, k_train), _truths(held, k_held)
    z = float(norm.ppf(0.5 + INTERVAL / 2))
    out: dict = {"clips": len(held["bpm"]), "readings": len(truth_held["tempo"])}
    for meta, (mean_key, sd_key) in METAS.items():
        fixed_sd = float(np.sqrt(np.mean(np.square(truth_train[meta] - plans_train[mean_key]))))
        y, mean, sd = truth_held[meta], plans_held[mean_key], plans_held[sd_key]
        out[meta] = {
            "nll": round(_nll(y, mean, sd), 4),
            "nll_fixed_spread": round(_nll(y, mean, fixed_sd), 4),
            "coverage_80": round(float(np.mean(np.abs(y - mean) <= z * sd)), 3),
            "coverage_80_fixed_spread": round(float(np.mean(np.abs(y - mean) <= z * fixed_sd)), 3),
            "sd_min": round(float(sd.min()), 4),
            "sd_max": round(float(sd.max()), 4),
        }
    p, major = plans_held["p_major"], truth_held["major"]
    edges = np.linspace(0, 1, bins + 1)
    table, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (p >= lo) & ((p < hi) | (hi == 1.0))
        if inside.any():
            table.append(
                {
                    "bin": f"{lo:.1f}-{hi:.1f}",
                    "n": int(inside.sum()),
                    "p_major": round(float(p[inside].mean()), 3),
                    "major": round(float(major[inside].mean()), 3),
                }
            )
            ece += inside.mean() * abs(p[inside].mean() - major[inside].mean())
    out["mode"] = {
        "reliability": table,
        "ece": round(float(ece), 4),
        "brier": round(float(np.mean((p - major) ** 2)), 4),
        "brier_base_rate": round(float(np.mean((major.mean() - major) ** 2)), 4),
    }
    return out


@torch.no_grad()
def plan_entropy(gen) -> dict | None:
    """Mean plan entropy (nats) of the clear and the mixed prompts, and of each prompt."""
    if gen.pipe.planner is None:
        return None
    out: dict = {}
    for kind, prompts in plan_prompts().items():
        entropies = [d.entropy() for d in gen.distributions(prompts)]
        out[kind] = round(float(np.mean(entropies)), 4)
    out["mixed_minus_clear"] = round(out["mixed"] - out["clear"], 4)
    return out
