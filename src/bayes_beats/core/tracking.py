"""MLflow for the stages: one run per stage, params flattened from params.yaml, git commit, the dataset
as an input with its DVC hash, per-step metrics, artifacts. Embedded default: sqlite:///mlflow.db with
artifacts in mlartifacts/; MLFLOW_TRACKING_URI switches to a server."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bayes_beats.core import paths
from bayes_beats.core.config import Params

log = logging.getLogger(__name__)
EXPERIMENT = paths.EXPERIMENT


class TrackingError(Exception):
    """The tracking server cannot be reached: one line, said at the start of a stage."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def check_reachable(uri: str) -> None:
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).read()
        except OSError as err:
            raise TrackingError(
                f"MLflow tracking server {uri} is not reachable ({err}); start it or unset MLFLOW_TRACKING_URI"
            ) from err


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = str(value)
    return out


def numeric(tree: dict) -> dict[str, float]:
    """The finite numbers of a nested metrics tree, by dotted name (tables and words are left out)."""
    out = {}
    for name, text in flatten(tree).items():
        try:
            value = float(text)
        except ValueError:
            continue
        if math.isfinite(value):
            out[name] = value
    return out


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    except FileNotFoundError:  # no git at all, as in the training image
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def setup() -> str:
    import mlflow

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = Path("mlartifacts").resolve().as_uri() if uri.startswith("sqlite") else None
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return uri


@contextlib.contextmanager
def stage_run(stage: str, params: Params) -> Iterator[Any]:
    """An MLflow run for one stage, with params, commit, profile and the dataset as its input."""
    import mlflow

    setup()
    with mlflow.start_run(run_name=stage, log_system_metrics=True) as run:
        mlflow.log_params(flatten(params.model_dump()))
        mlflow.set_tags({"stage": stage, "git_commit": git_commit(), "profile": params.model.profile})
        log_dataset()
        yield run


def log_dataset() -> None:
    import mlflow
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas

    from bayes_beats.core.tracking import dataset_hash

    index = paths.MANIFEST
    if index.is_file():
        frame = pd.read_csv(index, usecols=["clip_id", "track_id", "tags"])
        dataset = from_pandas(frame, source=str(paths.DATASET), name="bayes-beats-dataset", digest=dataset_hash())
        mlflow.log_input(dataset, context="training")


class MetricLogger:
    """Per-step metrics, best effort: a lost server does not stop training. `flush` sends every row of the
    history this run has not logged yet — rows lost with the server, and rows from before a resume (the
    history travels in the checkpoints)."""

    def __init__(self) -> None:
        self.lost = False
        self.logged: set[int] = set()

    def __call__(self, row: dict) -> None:
        if self.lost:
            return
        import mlflow

        try:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "step"}, step=row["step"])
            self.logged.add(row["step"])
        except Exception as err:  # noqa: BLE001 - any client error means the same: keep training
            self.lost = True
            log.warning("MLflow unreachable mid-run (%s): metrics will be sent at the end", err)

    def flush(self, history: list[dict]) -> None:
        import mlflow

        for row in history:
            if row["step"] not in self.logged:
                mlflow.log_metrics({k: v for k, v in row.items() if k != "step"}, step=row["step"])
                self.logged.add(row["step"])


def dataset_hash() -> str | None:
    """The DVC hash of data/dataset as recorded in dvc.lock (None outside a DVC run)."""
    if not Path("dvc.lock").is_file():
        return None
    lock = yaml.safe_load(Path("dvc.lock").read_text())
    outs = lock.get("stages", {}).get("dataset", {}).get("outs", [])
    return next((o.get("md5") for o in outs if o.get("path") == str(paths.DATASET)), None)
