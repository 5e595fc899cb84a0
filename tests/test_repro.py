"""The README's `make demo` on a fresh copy of the repository, at toy sizes: every stage of `dvc repro` from
`corpus` to `monitor` runs and passes, the monitor's sample traffic passes its checks, and a second
`dvc repro` runs nothing. The full-size run is `make demo` itself (about 25 minutes on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from conftest import BIN, TINY, copy_repo

TOY = {
    **TINY,
    "data": {"source": "synth"},
    "corpus": {"n_tracks": 24, "track_seconds": 8},
    "sample": {"n_tracks": 24, "clips_per_track": 1, "clip_seconds": 4},
    "codec": {**TINY["codec"], "stats_clips": 8, "eval_clips": 2},
    "clap": {"steps": 20, "batch_size": 8, "crop_seconds": 2},
    "evaluate": {"validation_prompts": 4, "seconds": 4, "num_variations": 2, "diversity_prompts": 2},
    "register": {"floors": {"clap_local": -1.0}},  # a 60-step model must become the champion `package` needs
    "traffic": {"requests": 40, "seconds": 4, "streams": 1, "stream_seconds": 12},
    # the absolute floors are the full model's: a 20-step CLAP scores near 0 and 24 tracks' captions know few
    # words; the drift test, which compares the two samples, keeps its full-size threshold
    "monitor": {"min_requests": 10, "clap_floor": -1.0, "max_oov_pct": 100.0},
}


def run(repo, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db",
        "BENTOML_HOME": str(repo / ".bentoml"),
    }
    return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=3600)


@pytest.mark.slow
def test_a_fresh_copy_reproduces_corpus_to_monitor_and_a_second_repro_runs_nothing(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in TOY.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    first = run(repo, str(BIN / "dvc"), "repro")
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for stage in stages:
        assert f"Running stage '{stage}'" in first.stdout, stage
    monitor = json.loads((repo / "metrics/monitor.json").read_text())
    assert monitor["requests"] == 20 and monitor["failed"] == 0, monitor  # clean traffic passes its checks
    # the radio listener's segments are the stream's figures, kept out of the drift tests' 20 requests
    assert monitor["stream"]["segments"] >= 2 and monitor["stream"]["minutes_listened"] >= 0.2, monitor
    assert monitor["stream"]["votes_per_minute_listened"] is None  # a CSV sample has no votes: unknown, not 0

    second = run(repo, str(BIN / "dvc"), "repro")
    assert second.returncode == 0 and "Running stage" not in second.stdout, second.stdout[-2000:]
    summary = run(repo, str(BIN / "python"), "-m", "bayes_beats.core.summary")
    assert summary.returncode == 0 and "monitor" in summary.stdout, summary.stderr[-2000:]
