"""The plan as a distribution, measured: calibration on held-out clips (NLL against a fixed spread, 80 %
coverage, mode reliability), mean entropy of clear vs mixed prompts, and how far four takes (draws of the
plan) spread against seeds alone at temperature 0, at what CLAP cost. The same functions `evaluate` logs.

    python bench/plans.py [model_dir]   → bench/plans.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bayes_beats import load_generator
from bayes_beats.core import paths
from bayes_beats.core.config import load_params
from bayes_beats.evaluate import scene_captions, take_spread
from bayes_beats.model.calibration import calibration, plan_entropy
from bayes_beats.model.scoring import load_scorer

OUT = Path("bench/plans.json")


def main(model_dir: str = "models/finetuned") -> dict:
    params = load_params()
    gen = load_generator(model_dir)
    ep = params.evaluate
    scorer = load_scorer(ep.backend, ep.clap_checkpoint, ep.laion_audio_model, ep.laion_text_model)
    scenes = [c["prompt"] for c in scene_captions()[: ep.diversity_prompts]]
    return {
        "calibration": calibration(gen.pipe.planner, paths.TRAIN_CACHE, paths.ENCODED / "validation.safetensors"),
        "entropy": plan_entropy(gen),
        "takes": take_spread(model_dir, scenes, scorer, params),
    }


if __name__ == "__main__":
    results = main(*sys.argv[1:])
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
