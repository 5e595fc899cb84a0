"""`dvc repro` end to end on a small synth corpus, in a fresh copy of the repo."""

import json
import re
import subprocess

import datasets
import pytest
import yaml
from conftest import BIN, copy_repo

pytestmark = pytest.mark.slow
DATA_STAGES = {"corpus", "sample", "features", "labels", "dataset", "data_quality"}


def repro(repo, *targets: str) -> set[str]:
    done = subprocess.run(
        [str(BIN / "dvc"), "repro", *targets],
        cwd=repo,
        capture_output=True,
        text=True,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(repo), "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return set(re.findall(r"Running stage '([^']+)'", done.stdout))


def set_params(repo, **changes) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in changes.items():
        section, name = key.split("__")
        params[section][name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_repro_runs_the_data_stages_then_only_what_changed(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    set_params(repo, corpus__n_tracks=30, corpus__track_seconds=12, sample__n_tracks=16, sample__clips_per_track=1)

    assert repro(repo, *sorted(DATA_STAGES)) == DATA_STAGES
    dd = datasets.load_from_disk(str(repo / "data/dataset"))
    assert sum(len(dd[s]) for s in dd) == 16
    metrics = json.loads((repo / "metrics/data.json").read_text())
    assert metrics["tracks_in"] == 30 and metrics["tracks_kept"] == 16 and metrics["clips_kept"] == 16
    assert (repo / "reports/data_quality.html").stat().st_size > 10_000

    assert repro(repo, *sorted(DATA_STAGES)) == set()  # nothing changed: nothing runs

    set_params(repo, sample__n_tracks=12)
    assert repro(repo, *sorted(DATA_STAGES)) == DATA_STAGES - {"corpus"}
    assert json.loads((repo / "metrics/data.json").read_text())["tracks_kept"] == 12
