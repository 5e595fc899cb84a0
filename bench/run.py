"""`make bench`: speed figures measured side by side in one run on this machine → bench/results.json.

Run from the repo root after `make demo` (it reads data/ the pipeline produced)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_beats.config import CorpusParams, load_params
from bayes_beats.skips import SkipLog

RESULTS = Path("bench/results.json")


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    packages = ("torch", "diffusers", "librosa", "numpy", "dvc", "datasets")
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "versions": {p: version(p) for p in packages},
    }


def bench_corpus(n_tracks: int = 640) -> dict:
    from bayes_beats import corpus

    params = load_params().corpus.model_dump() | {"n_tracks": n_tracks}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        corpus.generate(CorpusParams(**params), Path(tmp) / "raw")
        seconds = time.perf_counter() - start
    return {"tracks": n_tracks, "track_seconds": params["track_seconds"], "seconds": round(seconds, 1)}


def bench_features(n_clips: int = 240) -> dict:
    from bayes_beats.features import compute

    params = load_params()
    manifest = pd.read_csv("data/sampled/manifest.csv").head(n_clips)
    out = {}
    for workers in (1, 2):
        fp = params.features.model_copy(update={"workers": workers})
        start = time.perf_counter()
        compute(manifest, params.sample.sample_rate, fp, SkipLog("bench"))
        out[f"clips_per_s_{workers}_workers"] = round(n_clips / (time.perf_counter() - start), 2)
    out["speedup_2_vs_1"] = round(out["clips_per_s_2_workers"] / out["clips_per_s_1_workers"], 2)
    return out


def feature_accuracy() -> dict:
    """Measured features vs the synth corpus's ground truth, over every clip of the pipeline's dataset."""
    truth = pd.read_csv("data/raw/ground_truth.csv")
    clips = pd.read_csv("data/sampled/manifest.csv").merge(
        pd.read_parquet("data/features/features.parquet"), on="clip_id"
    )
    merged = clips.merge(truth, on="track_id", suffixes=("", "_true"))
    ratio = merged["bpm"] / merged["bpm_true"]
    tempo_ok = np.min([np.abs(ratio * m - 1) for m in (1, 2, 0.5)], axis=0) < 0.04
    return {
        "clips": len(merged),
        "bpm_within_4pct_or_octave": round(float(tempo_ok.mean()), 4),
        "bpm_within_4pct_exact": round(float((np.abs(ratio - 1) < 0.04).mean()), 4),
        "mode_accuracy": round(float((merged["mode"] == merged["mode_true"]).mean()), 4),
        "key_accuracy": round(float((merged["keyscale"] == merged["keyscale_true"]).mean()), 4),
    }


def bench_noop_repro() -> dict:
    dvc = str(Path(sys.executable).parent / "dvc")
    start = time.perf_counter()
    done = subprocess.run([dvc, "repro"], capture_output=True, text=True)
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "ran_stages": done.stdout.count("Running stage"),
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import model_bench
    import serve_bench

    results = {
        "machine": machine(),
        "noop_dvc_repro": bench_noop_repro(),
        "features": bench_features(),
        "feature_accuracy": feature_accuracy(),
        "corpus_generation": bench_corpus(),
        "model": model_bench.main(),
        "serving": serve_bench.main(),
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
