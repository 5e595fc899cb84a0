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

PROMPTS = json.loads(Path("bench/vibe_prompts.json").read_text())


def measure(model_dir: str, seconds: float = 10.0, seed: int = 0, temperature: float = 0.0) -> dict:
    gen = load_generator(model_dir)
    params = load_params().features
    texts = [p["prompt"] for p in PROMPTS]
    audio = gen.generate(texts, duration_s=seconds, seed=seed, temperature=temperature)
    plans = gen.last_plans
    feats = [extract(a[0][0], gen.sample_rate, params) for a in audio]
    arousal = np.array([p["arousal"] for p in PROMPTS])
    valence = np.array([p["valence"] for p in PROMPTS])
    bpm = np.array([f["bpm"] for f in feats])
    folded = np.where(bpm > 140, bpm / 2, np.where(bpm < 60, bpm * 2, bpm))
    energy = np.array([f["onset_rate"] for f in feats])
    clear = np.abs(valence) >= 0.5
    major = np.array([f["mode"] == "major" for f in feats])
    shuffled = np.random.default_rng(0).permutation(len(bpm))
    planned_bpm = np.array([b for b, _ in plans])
    return {
        "rho_arousal_tempo": round(float(spearmanr(arousal, bpm).statistic), 3),
        "rho_arousal_tempo_folded": round(float(spearmanr(arousal, folded).statistic), 3),
        "rho_arousal_tempo_shuffled_baseline": round(float(spearmanr(arousal, bpm[shuffled]).statistic), 3),
        "rho_arousal_onset_rate": round(float(spearmanr(arousal, energy).statistic), 3),
        "rho_arousal_brightness": round(float(spearmanr(arousal, [f["centroid_hz"] for f in feats]).statistic), 3),
        "mode_accuracy_clear_valence": round(float((major[clear] == (valence[clear] > 0)).mean()), 3),
        "clear_valence_prompts": int(clear.sum()),
        "planned_vs_measured_tempo_within_8pct": round(float((np.abs(folded / planned_bpm - 1) < 0.08).mean()), 3),
        "plans": [
            {
                "prompt": t[:40],
                "planned": list(p),
                "measured_bpm": round(float(b), 1),
                "measured_mode": f["mode"],
            }
            for t, p, b, f in zip(texts, plans, bpm, feats, strict=True)
        ],
    }


def main() -> None:
    models = sys.argv[1:] or ["models/base", "models/finetuned"]
    results = {m: measure(m) for m in models}
    Path("bench/vibe_follow.json").write_text(json.dumps(results, indent=2) + "\n")
    for m, r in results.items():
        print(m, {k: v for k, v in r.items() if k != "plans"})


if __name__ == "__main__":
    main()
