"""What each part of the plan and the sketch buys: the fine-tuned model with one thing changed per row,
every row measured the same way in one run → bench/ablation.json and the table in docs/ablation.md.

Measures per row: control accuracy (evaluate.control_accuracy: 24 clips, fixed bpm/key), vibe following
on the committed scene captions (evaluate.vibe_metrics, one seed, temperature 0), the planner on the
labelled free-text prompts (evaluate.plan_reading) and the generation time of 10 s of audio.

    python bench/ablation.py   (after `dvc repro`; ~10 min on 2 cores)
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm
from sklearn.linear_model import LinearRegression

from bayes_beats.core import paths
from bayes_beats.core.config import load_params
from bayes_beats.evaluate import control_accuracy, plan_reading, scene_captions, vibe_metrics
from bayes_beats.model.generate import load_generator
from bayes_beats.model.sketch import DEFAULT_DEGREES, chords_of
from bayes_beats.model.train import load_cache
from bayes_beats.music.analysis import extract

OUT = Path("bench/ablation.json")
TABLE = Path("docs/ablation.md")
COLUMNS = {
    "tempo_within_3pct": "tempo ±3 %",
    "mode_accuracy": "mode",
    "key_accuracy": "key",
    "rho_arousal_tempo": "ρ(arousal, tempo)",
    "rho_arousal_onset_rate": "ρ(arousal, onset rate)",
    "mode_accuracy_clear_valence": "mode, clear prompts",
    "tempo_range_coverage": "tempo range covered",
    "seconds_per_10s_clip_batched": "s per 10-s clip (batch 24)",
}


def unmatched_planner(planner):
    """The planner with plain regressions (each meta's conditional mean): no calibration of the spread."""
    cache, _ = load_cache(paths.TRAIN_CACHE)
    truth = np.stack([cache["valence"].numpy(), cache["arousal"].numpy()], axis=1)

    def plain(y):
        fit = LinearRegression().fit(truth, y)
        return (float(fit.intercept_), *map(float, fit.coef_))

    other = copy.deepcopy(planner)
    other.register_to_config(
        log_bpm=plain(np.log(cache["bpm"].numpy())),
        energy=plain(norm.ppf(cache["energy"].numpy().clip(0.005, 0.995))),
    )
    return other


@contextlib.contextmanager
def changed(gen, change: str):
    """The generator with one thing changed; restored after."""
    saved = (gen.guidance, gen.params, gen.pipe.planner)
    planner = gen.pipe.planner
    if change.startswith(("sketch_guidance=", "beat_guidance=", "beat_guidance_above_t=")):
        key, value = change.split("=")
        gen.guidance = gen.guidance | {key: float(value)}
    elif change.startswith("steps="):
        gen.params = gen.params.model_copy(update={"num_inference_steps": int(change.split("=")[1])})
    elif change == "fixed I–IV–V–I chords":
        fixed = copy.deepcopy(planner)
        fixed.progression = lambda major, rng: chords_of(DEFAULT_DEGREES, 0, "major" if major else "minor")
        gen.pipe.planner = fixed
    elif change == "no spread calibration":
        gen.pipe.planner = unmatched_planner(planner)
    try:
        yield gen
    finally:
        gen.guidance, gen.params, gen.pipe.planner = saved


def measure(gen, energy: float | None = None) -> dict:
    features = load_params().features
    captions = scene_captions()
    started = time.perf_counter()
    audio, plans = gen.generate_with_plans(
        [c["prompt"] for c in captions], 10.0, seed=0, temperature=0.0, energy=energy
    )
    per_clip_s = (time.perf_counter() - started) / len(captions)
    feats = [extract(a[0][0], gen.sample_rate, features) for a in audio]
    vibe = vibe_metrics([c["valence"] for c in captions], [c["arousal"] for c in captions], feats, plans)
    plan = plan_reading(gen) or {}
    control = control_accuracy(gen)
    return {
        "tempo_within_3pct": control["tempo_within_3pct"],
        "mode_accuracy": control["mode_accuracy"],
        "key_accuracy": control["key_accuracy"],
        "rho_arousal_tempo": vibe["rho_arousal_tempo"],
        "rho_arousal_onset_rate": vibe["rho_arousal_energy"],
        "mode_accuracy_clear_valence": vibe["mode_accuracy_clear_valence"],
        "tempo_range_coverage": plan.get("tempo_range_coverage"),
        "seconds_per_10s_clip_batched": round(per_clip_s, 3),
    }


ROWS = (
    "as trained",
    "beat_guidance=0",
    "beat_guidance_above_t=0",
    "sketch_guidance=1",
    "sketch_guidance=2",
    "energy channel held at 0.5",
    "fixed I–IV–V–I chords",
    "no spread calibration",
    "steps=4",
)


def main() -> dict:
    gen = load_generator(paths.FINETUNED)
    results = {}
    print(f"as trained: {gen.guidance}, steps={gen.params.num_inference_steps}", flush=True)
    for row in ROWS:
        with changed(gen, row) as g:
            results[row] = measure(g, energy=0.5 if row.startswith("energy") else None)
        print(row, results[row], flush=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    write_table(results)
    return results


def write_table(results: dict) -> None:
    lines = [
        "| change | " + " | ".join(COLUMNS.values()) + " |",
        "|---|" + "---|" * len(COLUMNS),
        *(f"| {row} | " + " | ".join(str(r[k]) for k in COLUMNS) + " |" for row, r in results.items()),
    ]
    text = TABLE.read_text() if TABLE.is_file() else "# Ablation\n\n<!-- table -->\n<!-- /table -->\n"
    head, rest = text.split("<!-- table -->", 1)
    tail = rest.split("<!-- /table -->", 1)[1]
    TABLE.write_text(head + "<!-- table -->\n" + "\n".join(lines) + "\n<!-- /table -->" + tail)


if __name__ == "__main__":
    main()
