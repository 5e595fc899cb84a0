"""`make bench`: speed figures measured side by side in one run on this machine → bench/results.json.

Run from the repo root after `make demo` (it reads data/ the pipeline produced). `python bench/run.py NAME ...`
runs only the named benchmarks and merges them into the results already written."""

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

from bayes_beats.core.atomic import write_json, write_text
from bayes_beats.core.config import load_params
from bayes_beats.core.skips import SkipLog

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

    params = load_params().with_overrides(corpus={"n_tracks": n_tracks}).corpus
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        corpus.generate(params, Path(tmp) / "raw")
        seconds = time.perf_counter() - start
    return {"tracks": n_tracks, "track_seconds": params.track_seconds, "seconds": round(seconds, 1)}


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


# the whole pipeline at toy sizes, so full vs no-op fits in a benchmark run (the real one takes ~15 min)
TOY = {
    "corpus": {"n_tracks": 40, "track_seconds": 12},
    "sample": {"n_tracks": 16, "clips_per_track": 1, "clip_seconds": 4},
    "codec": {"n_bands": 32, "stats_clips": 8, "eval_clips": 2},
    "model": {"hidden_size": 64, "num_layers": 1, "head_dim": 32, "num_inference_steps": 4},
    "pretrain": {"steps": 30, "batch_size": 4, "crop_seconds": 2, "checkpointing_steps": 10},
    "finetune": {"steps": 12, "batch_size": 4, "crop_seconds": 2, "checkpointing_steps": 6},
    "clap": {"steps": 20, "batch_size": 8, "crop_seconds": 2},
    "evaluate": {"validation_prompts": 4, "seconds": 2, "diversity_prompts": 1},
}


def bench_full_vs_noop_repro(target: str = "register") -> dict:
    """`dvc repro` of every stage up to `target` in a fresh copy of the project at toy sizes, then again
    with nothing changed: what DVC's caching saves, side by side."""
    import yaml

    dvc = str(Path(sys.executable).parent / "dvc")
    files = subprocess.run(["git", "ls-files"], check=True, capture_output=True, text=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        for rel in files:
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_bytes(Path(rel).read_bytes())
        params = yaml.safe_load((repo / "params.yaml").read_text())
        for section, values in TOY.items():
            params[section].update(values)
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        (repo / "dvc.lock").unlink()
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db"}
        timings = {}
        for run in ("full", "noop"):
            start = time.perf_counter()
            done = subprocess.run([dvc, "repro", target], cwd=repo, env=env, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"dvc repro {target} failed: {done.stderr[-2000:]}")
            timings[run] = (round(time.perf_counter() - start, 1), done.stdout.count("Running stage"))
    return {
        "target": target,
        "sizes": "toy (bench/run.py TOY)",
        "full_seconds": timings["full"][0],
        "full_ran_stages": timings["full"][1],
        "noop_seconds": timings["noop"][0],
        "noop_ran_stages": timings["noop"][1],
        "speedup": round(timings["full"][0] / timings["noop"][0], 1),
    }


def main(only: set[str] | None = None) -> None:
    """Every benchmark, or only the named ones (`python bench/run.py stream_quality stream`) merged into the
    bench/results.json already written; the table is rewritten from the merged results either way."""
    sys.path.insert(0, str(Path(__file__).parent))
    import control
    import listeners
    import model_bench
    import plans
    import serve_bench
    import stream_bench
    import stream_quality
    import vibe_follow

    benches = {
        "noop_dvc_repro": bench_noop_repro,
        "dvc_repro_full_vs_noop": bench_full_vs_noop_repro,
        "features": bench_features,
        "feature_accuracy": feature_accuracy,
        "corpus_generation": bench_corpus,
        "model": model_bench.main,
        "serving": serve_bench.main,
        "control": control.main,  # fixed metas → what lands in the audio; the planner on free text
        "vibe_follow": vibe_follow.main,  # unseen scene captions, 3 seeds: does the audio follow the vibe
        "plans": plans.main,  # the plan distribution: calibration, entropy, takes' spread vs seeds alone
        "listeners": listeners.main,  # simulated listeners: does the taste posterior learn them
        # the radio's seams (concatenation / crossfade / continuation) and the radio at real time (first audio,
        # concurrent streams, leaks): also in their own JSON, which docs/design.md cites
        "stream_quality": lambda: stream_quality.save(stream_quality.run()),
        "stream": lambda: stream_bench.save(stream_bench.main()),
    }
    if only and only - benches.keys():
        raise SystemExit(f"unknown benchmarks {sorted(only - benches.keys())}; known: {', '.join(benches)}")
    here = machine()
    results = json.loads(RESULTS.read_text()) if only else {}
    results["machine"] = here
    for name, bench in benches.items():
        if not only or name in only:
            results[name] = bench() | {"machine": f"{here['cores']} cores, {here['cpu']}"}  # versions: the top entry
    write_json(RESULTS, results)  # atomic: a killed run leaves the last one whole
    write_table(results, Path("docs/benchmarks.md"))
    print(json.dumps({k: results[k] for k in (only or results)}, indent=2))


def write_table(r: dict, out: Path) -> None:
    """The figures people ask for, as a markdown table (bench/results.json has everything)."""
    m, s, f, model = r["machine"], r["serving"], r["features"], r["model"]
    gen, train = model["generation_10s"], model["training_cached_vs_live"]
    repro = r["dvc_repro_full_vs_noop"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    rows = [
        ("Generation, 10 s of audio (tiny)", f"{gen['total_s']} s", f"real-time factor {gen['real_time_factor']}×"),
        (
            "Serving, 8 clients, 10-s clips: batched",
            f"{s['batched']['requests_per_s']} req/s, p50 {s['batched']['p50_s']} s, p95 {s['batched']['p95_s']} s",
            f"{s['throughput_ratio']}× unbatched, {s['batched']['errors']} errors",
        ),
        (
            "Serving, 8 clients, 10-s clips: unbatched",
            f"{s['unbatched']['requests_per_s']} req/s, p50 {s['unbatched']['p50_s']} s, "
            f"p95 {s['unbatched']['p95_s']} s",
            f"{s['unbatched']['errors']} errors",
        ),
        (
            "Training step: cached latents",
            f"{train['cached']['samples_per_s']} samples/s, peak RSS {train['cached']['peak_rss_mb']} MB",
            f"{train['speedup_cached_vs_live']}× on the fly",
        ),
        (
            "Training step: on the fly",
            f"{train['live']['samples_per_s']} samples/s, peak RSS {train['live']['peak_rss_mb']} MB",
            "",
        ),
        (
            "Features, 1 → 2 workers",
            f"{f['clips_per_s_1_workers']} → {f['clips_per_s_2_workers']} clips/s",
            f"{f['speedup_2_vs_1']}×",
        ),
        (
            f"`dvc repro {repro['target']}`, toy sizes: full vs no-op",
            f"{repro['full_seconds']} s ({repro['full_ran_stages']} stages) vs {repro['noop_seconds']} s",
            f"{repro['speedup']}×",
        ),
        ("`dvc repro`, the real pipeline, nothing changed", f"{r['noop_dvc_repro']['seconds']} s", ""),
    ]
    if "stream" in r:
        st, q = r["stream"], r["stream_quality"]["variants"]
        c = st["concurrent"]
        rows += [
            ("Radio: first audio", f"median {st['first_audio']['median_s']} s, max {st['first_audio']['max_s']} s", ""),
            (
                f"Radio: {c['streams']} streams × {c['seconds']:.0f} s",
                f"{c['client_stalls']} client stalls, {c['server_underruns']:.0f} server underruns, "
                f"{c['memory_per_stream_mb']} MB a stream",
                f"/generate meanwhile: {c['generate_meanwhile']['ok']}/{c['generate_meanwhile']['requests']} ok",
            ),
            (
                "Radio: most streams with no stall",
                f"{st['most_streams']['held']} (in-process limit {st['most_streams']['limit_in_process']})",
                f"{st['most_streams']['share']:.0%} of the limit",
            ),
            (
                "Served /generate, 8 clients, vs in-process",
                f"served {st['generate_served']['served_requests_per_s']} vs in-process "
                f"{st['generate_served']['in_process_best']} req/s, interleaved",
                f"{st['generate_served']['share_of_in_process']:.0%} (median round)",
            ),
            (
                "Radio seams within 40 ms: concat / crossfade / continuation",
                " / ".join(str(q[v]["seam_jump_within_40ms"]) for v in ("a_concat", "b_xfade", "c_continue")),
                "",
            ),
            (
                "Radio seams: flux / loudness within the inside p95, no click: concat / crossfade / continuation",
                " / ".join(
                    f"{q[v]['seam_flux_within_p95']}, {q[v]['seam_loud_within_p95']}, {q[v]['seam_no_click']}"
                    for v in ("a_concat", "b_xfade", "c_continue")
                ),
                "",
            ),
            (
                "Radio key = plan (continuation): per planned-key run / 8-s windows across seams vs inside",
                f"{q['c_continue']['key_run_matches_plan']} / {q['c_continue']['key_window_across_seam_matches_plan']}"
                f" vs {q['c_continue']['key_window_inside_matches_plan']}",
                "",
            ),
        ]
    soak_file = Path("bench/soak.json")  # `make soak` (10 min), not part of `make bench`
    if soak_file.is_file():
        soak = json.loads(soak_file.read_text())
        rows.append(
            (
                f"Soak (`make soak`): {soak['clients']} clients, {soak['seconds']:.0f} s, tiny model",
                f"{soak['requests']} requests, {soak['errors']} errors, p50 {soak['p50_s']} s, p95 {soak['p95_s']} s",
                f"RSS {soak['rss_mb_after_warmup']} → {soak['rss_mb_max_second_half']} MB (+{soak['rss_growth']:.1%})",
            )
        )
    lines = [
        "# Benchmarks",
        "",
        f"`make bench` on {m['cores']} cores ({m['cpu']}), Python {m['python']}; {versions}. "
        "Ratios are measured side by side in one run; everything is in bench/results.json.",
        "",
        "| What | Measured | Ratio |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
    ]
    write_text(out, "\n".join(lines))


if __name__ == "__main__":
    main(set(sys.argv[1:]) or None)
