"""Shared fixtures: small synthetic corpora, working dirs, free loopback ports, a real GCS emulator."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

# before anything imports huggingface_hub (it reads these once): no hub retries, no gRPC layout lookups
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

# The tests' own MLflow store, BentoML home and request log, never the workspace's: the Makefile exports
# MLFLOW_TRACKING_URI and BENTOML_HOME pointing into the clone, so `make test` used to log the tests' runs
# into the user's mlflow.db. Overridden (not setdefault) before anything imports mlflow or bentoml (bentoml
# reads BENTOML_HOME once, at import); a test that needs its own store still passes one explicitly.
TEST_HOME = Path(tempfile.mkdtemp(prefix="bayes-beats-tests-"))
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{TEST_HOME}/mlflow.db"
os.environ["BENTOML_HOME"] = str(TEST_HOME / "bentoml")
os.environ["BAYES_BEATS_REQUEST_LOG"] = str(TEST_HOME / "requests.sqlite")
# Hypothesis keeps its cache (local constants) under .hypothesis/ of the working directory even with
# database=None: the suite writes nothing into the workspace (test_workspace)
os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = str(TEST_HOME / "hypothesis")

from bayes_beats import corpus  # noqa: E402
from bayes_beats.core.config import Params, load_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# ---- the workspace as the suite found it: tests/test_workspace.py (run last) compares it at the end

# what a stage, `bentoml` or a server writes when run in the clone: listed by (size, mtime)
WORKSPACE_TREES = (".bentoml", "mlruns", "mlartifacts", "checkpoints", "models", "data", "serving/wheels", "build")
# stores and the tracked pipeline outputs: hashed
WORKSPACE_FILES = ("mlflow.db", "requests.sqlite", "serving/requests.sqlite", "dvc.lock", "params.yaml")
WORKSPACE_HASHED_DIRS = ("metrics", "reports")
# what Python and the tools write anyway (bytecode, their caches, an editable install's metadata)
WORKSPACE_NOISE = ("__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", ".venv-tools")


def workspace_state(root: Path = REPO) -> dict[str, object]:
    """A snapshot of what tests must leave alone in a clone: new untracked or ignored paths (git status),
    the stores and pipeline outputs (size, mtime, sha256), the output trees (size, mtime of each file)."""
    import hashlib

    def stat(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_size, st.st_mtime_ns

    files: dict[str, tuple[int, int, str]] = {}
    hashed = [root / f for f in WORKSPACE_FILES] + [
        p for d in WORKSPACE_HASHED_DIRS if (root / d).is_dir() for p in (root / d).rglob("*")
    ]
    for path in hashed:
        if path.is_file():
            files[str(path.relative_to(root))] = (*stat(path), hashlib.sha256(path.read_bytes()).hexdigest())
    trees = {
        str(p.relative_to(root)): stat(p)
        for tree in WORKSPACE_TREES
        if (root / tree).is_dir()
        for p in (root / tree).rglob("*")
        if p.is_file() and not p.is_symlink()
    }
    done = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=root, capture_output=True, text=True)
    status = done.stdout.splitlines() if done.returncode == 0 else []  # not a clone: the stat lists only
    untracked = sorted(
        line
        for line in status
        if line[:2] in ("??", "!!")
        and not any(part in WORKSPACE_NOISE for part in Path(line[3:]).parts)
        and not line.rstrip("/").endswith(".egg-info")
    )
    return {"untracked": untracked, "files": files, "trees": trees}


def workspace_changes(before: dict, after: dict) -> list[str]:
    """What differs between two workspace_state snapshots, one line each."""
    changes = [f"new: {line}" for line in after["untracked"] if line not in before["untracked"]]
    changes += [f"gone: {line}" for line in before["untracked"] if line not in after["untracked"]]
    for kind in ("files", "trees"):
        old, new = before[kind], after[kind]
        changes += [f"written: {p}" for p in sorted(new) if p not in old]
        changes += [f"changed: {p}" for p in sorted(new) if p in old and new[p] != old[p]]
        changes += [f"removed: {p}" for p in sorted(old) if p not in new]
    return changes


WORKSPACE_BEFORE = workspace_state()


def pytest_collection_modifyitems(config, items):
    """The workspace check last, whatever order the files were named in."""
    items.sort(key=lambda item: item.path.name == "test_workspace.py")


def pytest_unconfigure(config):
    shutil.rmtree(TEST_HOME, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """A 60-track, 12-s synthetic corpus in the MTG-Jamendo layout (built once per session)."""
    root = tmp_path_factory.mktemp("synth") / "raw"
    corpus.generate(params_with(corpus={"n_tracks": 60, "track_seconds": 12, "workers": 2}).corpus, root)
    return root


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Stages read and write relative to the working directory, as under `dvc repro`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def params_with(**sections) -> Params:
    """The repo's params.yaml with some keys replaced, e.g. params_with(sample={"n_tracks": 5})."""
    return load_params(REPO / "params.yaml").with_overrides(**sections)


@pytest.fixture(scope="session")
def gcs_emulator():
    """A real GCS emulator (gcp-storage-emulator) on loopback; yields its http://host:port."""
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "gcp-storage-emulator"),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "-q",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def copy_repo(dst: Path) -> Path:
    """The tracked project files (as a fresh clone has them) copied into `dst`, as a git repo."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"],
    ):
        subprocess.run(cmd, cwd=dst, check=True)
    return dst


TINY = dict(
    data={"source": "jamendo"},
    sample={"n_tracks": 12, "clips_per_track": 1, "clip_seconds": 4},
    dataset={"validation_fraction": 0.2, "test_fraction": 0.2},
    codec={"n_bands": 32, "stats_clips": 8, "eval_clips": 2},
    model={"hidden_size": 64, "num_layers": 1, "head_dim": 32, "num_inference_steps": 4},
    pretrain={
        "steps": 60,
        "batch_size": 4,
        "crop_seconds": 2,
        "log_every": 1,
        "checkpointing_steps": 10,
        "learning_rate": 0.003,
        "lr_scheduler": "constant",
        "lr_warmup_steps": 0,
    },
    finetune={
        "steps": 12,
        "batch_size": 4,
        "crop_seconds": 2,
        "log_every": 1,
        "checkpointing_steps": 6,
        "lora_rank": 4,
        "lora_alpha": 4,
        "learning_rate": 0.003,
        "lr_scheduler": "cosine",
        "lr_warmup_steps": 2,
    },
)


@pytest.fixture(scope="session")
def tiny_project(synth_corpus, tmp_path_factory):
    """A work dir after `dataset`, `codec`, `encode`, `pretrain` and `finetune` on tiny settings."""
    root = tmp_path_factory.mktemp("tiny_project")
    tiny = {**TINY, "data": {"source": "jamendo", "path": str(synth_corpus)}}
    params = params_with(**tiny)
    from bayes_beats import codec, dataset, encode, features, finetune, labels, pretrain, sample

    cwd = os.getcwd()
    os.chdir(root)
    try:
        for stage in (sample, features, labels, dataset, codec, encode, pretrain, finetune):
            stage.run(params)
    finally:
        os.chdir(cwd)
    return root, params


def project_copy(tiny_project, dst, **finetune):
    root, params = tiny_project
    for rel in ("data/encoded", "models/base", "models/codec"):
        shutil.copytree(root / rel, dst / rel)
    params = params.model_copy(update={"finetune": params.finetune.model_copy(update=finetune)})
    (dst / "params.yaml").write_text(yaml.safe_dump(params.model_dump()))
    return dst


@pytest.fixture(scope="session")
def clap_dir(tmp_path_factory) -> Path:
    """A LocalClap with random weights, saved as the `clap` stage saves its model (for the request log)."""
    from bayes_beats.model.clap import LocalClap

    path = tmp_path_factory.mktemp("clap") / "clap"
    torch.manual_seed(0)
    LocalClap().save_pretrained(path)
    return path


# ---- the service: a registry with a champion, and a real `bentoml serve` on loopback


@pytest.fixture(scope="session")
def registry(tiny_project, clap_dir, tmp_path_factory):
    """A sqlite MLflow registry whose `champion` is the tiny fine-tuned model (and models/clap for `package`)."""
    from bayes_beats import register

    root, params = tiny_project
    if not (root / "models" / "clap").exists():
        shutil.copytree(clap_dir, root / "models" / "clap")
    work = tmp_path_factory.mktemp("registry")
    (work / "models").symlink_to(root / "models")
    (work / "metrics").mkdir()
    (work / "metrics" / "eval.json").write_text(json.dumps({"finetuned": {"clap_local": 0.2}}))
    uri = f"sqlite:///{work}/mlflow.db"
    cwd, before = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.chdir(work)
    try:
        register.run(params)
    finally:
        os.chdir(cwd)
        os.environ.pop("MLFLOW_TRACKING_URI") if before is None else os.environ.update(MLFLOW_TRACKING_URI=before)
    assert json.loads((work / "metrics" / "register.json").read_text())["alias"] == "champion"
    return work, uri


def start_service(tmp: Path, env: dict[str, str], target: str = "service:BayesBeats", timeout: float = 180):
    port = free_port()
    # from source there is no Bento CLAP model: no clap_local score unless the caller names a CLAP dir
    source = {"BAYES_BEATS_CLAP_DIR": ""} if target.startswith("service:") else {}
    env = {"BAYES_BEATS_REQUEST_LOG": str(tmp / f"requests-{port}.sqlite"), **source, **env}
    log = open(tmp / f"serve-{port}.log", "w")  # noqa: SIM115 (closed by stop_service)
    proc = subprocess.Popen(
        [str(BIN / "bentoml"), "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO / "serving",
        env={**os.environ, "HF_HUB_OFFLINE": "1", "BENTOML_HOME": str(tmp / "bentoml"), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (tmp / f"serve-{port}.log").read_text()
        if proc.poll() is not None or "Application startup failed" in text:
            stop_service(proc, log, grace=5)
            raise RuntimeError(f"bentoml serve failed to start: {text[-3000:]}")
        try:
            if urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200:
                return proc, url, log
        except OSError:
            time.sleep(0.5)
    stop_service(proc, log, grace=5)
    raise TimeoutError(f"service not ready: {(tmp / f'serve-{port}.log').read_text()[-3000:]}")


def stop_service(proc: subprocess.Popen, log, grace: float = 60) -> int:
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group: also workers a stopped arbiter left behind
        return proc.wait(grace)
    except ProcessLookupError:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # a server stuck restarting a failing worker
        return proc.wait(10)
    finally:
        log.close()


CHAMPION_URI = "models:/bayes-beats@champion"


def champion_env(registry, **env: str) -> dict[str, str]:
    """The environment that serves the `registry` fixture's champion (its MLflow alias), plus `env`."""
    return {"MLFLOW_TRACKING_URI": registry[1], "BAYES_BEATS_MODEL_URI": CHAMPION_URI, **env}


@contextmanager
def champion_served(registry, tmp: Path, **env: str):
    """`bentoml serve` from source with the registry's champion, stopped on leaving: yields (proc, url,
    log). The one way the serving tests start the service."""
    proc, url, log = start_service(tmp, champion_env(registry, **env))
    try:
        yield proc, url, log
    finally:
        stop_service(proc, log)


def reference_frame(n: int, rng) -> pd.DataFrame:
    """`n` synthetic generations as the monitor reads them (prompt and what the audio measures)."""
    words = ["calm", "piano", "evening", "happy", "upbeat", "drums", "dark", "ambient", "pad", "energetic"]
    return pd.DataFrame(
        {
            "prompt": [" ".join(rng.choice(words, rng.integers(3, 7))) for _ in range(n)],
            "bpm": rng.normal(110, 15, n),
            "mode": rng.choice(["major", "minor"], n),
            "loudness_lufs": rng.normal(-18, 2, n),
            "centroid_hz": rng.normal(1800, 300, n),
            "onset_rate": rng.normal(3, 0.5, n),
            "clap_local": rng.normal(0.25, 0.05, n),
            "latency_s": rng.gamma(4, 0.2, n),
        }
    )


@pytest.fixture(scope="session")
def postgres() -> str:
    """A real PostgreSQL server (Debian's, `make postgres`) on loopback; yields a SQLAlchemy URL."""
    import glob
    import pwd
    import tempfile

    bindir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
    # not under pytest's base temp: that is 0700 root, which the postgres user cannot enter
    data = Path(tempfile.mkdtemp(prefix="bayes-beats-pg-")) / "data"
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as its own system user
        as_user = ["runuser", "-u", "postgres", "--"]
        owner = pwd.getpwnam("postgres")
        os.chown(data, owner.pw_uid, owner.pw_gid)
        os.chown(data.parent, owner.pw_uid, owner.pw_gid)
    port = free_port()
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "bb"], check=True, capture_output=True
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(data / "log"), "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://bb@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(data.parent, ignore_errors=True)


@pytest.fixture
def bucket(gcs_emulator, monkeypatch, synth_corpus):
    """The synthetic corpus under gs://jamendo-test/mood in the emulator (STORAGE_EMULATOR_HOST set)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    client = storage.Client(project="emulator", credentials=AnonymousCredentials())
    bucket = client.bucket("jamendo-test")
    if not bucket.exists():
        bucket = client.create_bucket("jamendo-test")
        for path in synth_corpus.rglob("*"):
            if path.is_file():
                bucket.blob(f"mood/{path.relative_to(synth_corpus)}").upload_from_filename(path)
    return bucket
