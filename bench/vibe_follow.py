"""Does the music follow the vibe? Base vs fine-tuned on 24 free-form scene prompts the model never saw,
measured with the features module → bench/vibe_follow.json. (Issue C turns this into `evaluate`.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from bayes_beats import load_generator
from bayes_beats.config import load_params
from bayes_beats.features import extract

PROMPTS = json.loads((Path(__file__).parents[1] / "src/bayes_beats/resources/scene_captions.json").read_text())


def measure(model_dir: str, seconds: float = 10.0, seeds: tuple[int, ...] = (0, 1), temperature: float = 0.0) -> dict:
    gen = load_generator(model_dir)
    params = load_params().features
    texts = [p["prompt"] for p in PROMPTS]
    feats, plans = [], []
    for seed in seeds:
        audio = gen.generate(texts, duration_s=seconds, seed=seed, temperature=temperature)
        plans += gen.last_plans
        feats += [extract(a[0][0], gen.sample_rate, params) for a in audio]
    arousal = np.tile([p["arousal"] for p in PROMPTS], len(seeds))
    valence = np.tile([p["valence"] for p in PROMPTS], len(seeds))
    bpm = np.array([f["bpm"] for f in feats])
    folded = np.where(bpm > 150, bpm / 2, np.where(bpm < 60, bpm * 2, bpm))
    clear = np.abs(valence) >= 0.5
    major = np.array([f["mode"] == "major" for f in feats])
    planned_bpm = np.array([b for b, _ in plans])
    planned_major = np.array([k.endswith("major") for _, k in plans])
    shuffled = np.random.default_rng(0).permutation(len(bpm))

    def rho(a, b) -> float:
        return round(float(spearmanr(a, b).statistic), 3)

    return {
        "generations": len(feats),
        "rho_arousal_tempo": rho(arousal, bpm),
        "rho_arousal_tempo_folded": rho(arousal, folded),
        "rho_arousal_tempo_shuffled_baseline": rho(arousal, bpm[shuffled]),
        "rho_arousal_onset_rate": rho(arousal, [f["onset_rate"] for f in feats]),
        "rho_arousal_brightness": rho(arousal, [f["centroid_hz"] for f in feats]),
        "rho_valence_brightness": rho(valence, [f["centroid_hz"] for f in feats]),
        "mode_accuracy_clear_valence": round(float((major[clear] == (valence[clear] > 0)).mean()), 3),
        "clear_valence_generations": int(clear.sum()),
        # the two halves of the chain: planner (vibe → metas) and renderer (metas → audio)
        "planner_mode_accuracy_clear_valence": round(float((planned_major[clear] == (valence[clear] > 0)).mean()), 3),
        "planner_rho_arousal_bpm": rho(arousal, planned_bpm),
        "renderer_mode_follows_plan": round(float((major == planned_major).mean()), 3),
        "renderer_tempo_within_8pct_of_plan": round(float((np.abs(folded / planned_bpm - 1) < 0.08).mean()), 3),
    }


def main() -> None:
    models = sys.argv[1:] or ["models/base", "models/finetuned"]
    results = {m: measure(m) for m in models}
    Path("bench/vibe_follow.json").write_text(json.dumps(results, indent=2) + "\n")
    for m, r in results.items():
        print(m, r)


if __name__ == "__main__":
    main()
