"""Sampling from a bucket and DVC push/pull, against a real GCS emulator on loopback."""

import json
import subprocess

import pandas as pd
import pytest
from conftest import BIN, copy_repo, params_with
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from bayes_beats import sample

pytestmark = pytest.mark.gcs


def test_sample_from_a_bucket_downloads_only_the_sampled_files(bucket, workdir):
    params = params_with(
        data={"source": "gcs", "path": "gs://jamendo-test/mood", "cache_dir": "cache"}, sample={"n_tracks": 5}
    )
    sample.run(params)
    manifest = pd.read_csv(workdir / "data/sampled/manifest.csv")
    assert manifest["track_id"].nunique() == 5
    cached = [p for p in (workdir / "cache").rglob("*") if p.is_file()]
    assert len(cached) == 5  # 5 of the 60 tracks crossed the wire
    assert json.loads((workdir / "data/sampled/skipped.json").read_text())["tracks_in"] == 60


def test_dvc_push_and_pull_through_the_gcs_remote(gcs_emulator, tmp_path):
    client = storage.Client(
        project="emulator", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_emulator}
    )
    if not client.bucket("bayes-beats-dvc").exists():
        client.create_bucket("bayes-beats-dvc")
    repo = copy_repo(tmp_path / "repo")
    dvc = [str(BIN / "dvc")]
    (repo / "data").mkdir(exist_ok=True)
    (repo / "data/thing.txt").write_text("tracked by dvc\n")
    env = {
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
    }

    def run(*args: str) -> None:
        done = subprocess.run(dvc + list(args), cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"dvc {args}: {done.stdout}\n{done.stderr}"

    run("remote", "modify", "--local", "gcs", "endpointurl", gcs_emulator)
    run("remote", "modify", "--local", "gcs", "allow_anonymous_login", "true")
    run("add", "data/thing.txt")
    run("push", "-r", "gcs")
    assert list(client.list_blobs("bayes-beats-dvc", prefix="store/"))
    (repo / "data/thing.txt").unlink()
    subprocess.run(["rm", "-rf", str(repo / ".dvc/cache")], check=True)
    run("pull", "-r", "gcs", "data/thing.txt.dvc")
    assert (repo / "data/thing.txt").read_text() == "tracked by dvc\n"
