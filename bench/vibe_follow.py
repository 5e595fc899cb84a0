"""Vibe following with more seeds than `evaluate` uses: base vs fine-tuned on the committed scene captions,
each generated with several seeds → bench/vibe_follow.json. Same metrics as evaluate.vibe_metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bayes_beats import load_generator
from bayes_beats.core.config import load_params
from bayes_beats.evaluate import scene_captions, vibe_metrics
from bayes_beats.music.analysis import extract


def measure(model_dir: str, seeds: tuple[int, ...] = (0, 1, 2), seconds: float = 10.0) -> dict:
    gen, params, captions = load_generator(model_dir), load_params().features, scene_captions()
    feats, plans = [], []
    for seed in seeds:
        audio = gen.generate([c["prompt"] for c in captions], seconds, seed=seed, temperature=0.0)
        plans += gen.last_plans
        feats += [extract(a[0][0], gen.sample_rate, params) for a in audio]
    valence = [c["valence"] for c in captions] * len(seeds)
    arousal = [c["arousal"] for c in captions] * len(seeds)
    return {"generations": len(feats), **vibe_metrics(valence, arousal, feats, plans)}


def main(model_dirs: list[str] | None = None) -> dict:
    return {m: measure(m) for m in model_dirs or ["models/base", "models/finetuned"]}


if __name__ == "__main__":
    results = main(sys.argv[1:])
    Path("bench/vibe_follow.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
