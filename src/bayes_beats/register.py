"""`register` stage: the fine-tuned model as an MLflow pyfunc, registered as a new version of `bayes-beats`,
tagged with its eval metrics, then the promotion gate: alias `champion` only when it beats the current
champion on `register.metric` by `register.min_delta` and passes every floor; otherwise `challenger`, and
one line that says why. Aliases are the only state: one moved by a person in the MLflow UI is what
serving loads next (`models:/bayes-beats@champion`)."""

from __future__ import annotations

import json
import logging
from importlib.metadata import requires
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bayes_beats.core import paths, tracking
from bayes_beats.core.atomic import write_json
from bayes_beats.core.config import Params, RegisterParams

# BayesBeatsModel stays importable from here: versions registered before the move pickled it by this path
from bayes_beats.model.pyfunc import SIGNATURE, BayesBeatsModel

log = logging.getLogger(__name__)
MODEL_NAME = paths.REGISTERED_MODEL
MODEL_DIR = paths.FINETUNED


def missed(metrics: dict, thresholds: dict[str, float]) -> list[str]:
    """The thresholds (floors or goals) the metrics fall short of, one line each; a missing figure misses."""
    return [
        f"{key}={metrics.get(key)} is below {threshold}"
        for key, threshold in thresholds.items()
        if metrics.get(key) is None or metrics[key] < threshold
    ]


def figures(values: dict) -> dict[str, float]:
    """The numeric entries of a mapping (metrics as evaluated, or a version's string tags) as floats."""
    return {k: float(v) for k, v in values.items() if _is_number(v)}


def gate(client: MlflowClient, metrics: dict, promote: RegisterParams) -> tuple[str, str]:
    """→ (alias, one-line reason). Floors first, then more of the product's goals met, then the metric."""
    value = metrics.get(promote.metric)
    if value is None:
        return "challenger", f"{promote.metric} missing from the evaluation"
    if below := missed(metrics, promote.floors):
        return "challenger", f"below the floor: {below[0]}"
    try:
        champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    except MlflowException:
        return "champion", f"first model to pass the floors ({promote.metric}={value:.4f})"
    # the goals are what the product must do (follow the vibe and the asked metas); a model that does more of them
    # wins whatever the metric, a CLAP score from a scorer trained here, says. The champion's figures are
    # its version's tags, so goals added since it was promoted count against it until it is measured again.
    held, n = figures(champion.tags), len(promote.goals)
    mine, theirs = n - len(missed(metrics, promote.goals)), n - len(missed(held, promote.goals))
    if mine != theirs:
        verdict = "champion" if mine > theirs else "challenger"
        return verdict, f"meets {mine} of {n} goals against champion v{champion.version}'s {theirs}"
    best = float(champion.tags.get(promote.metric, "-inf"))
    if value >= best + promote.min_delta:
        return (
            "champion",
            f"{promote.metric} {value:.4f} beats champion v{champion.version} ({best:.4f}) by >= {promote.min_delta}",
        )
    return (
        "challenger",
        f"{promote.metric} {value:.4f} does not beat champion v{champion.version} ({best:.4f}) by {promote.min_delta}",
    )


def _is_number(text: str) -> bool:
    try:
        return float(text) == float(text)  # NaN is not a figure to gate on
    except ValueError:
        return False


def run(params: Params) -> None:
    evaluation = json.loads(paths.EVAL_METRICS.read_text())["finetuned"]
    # nested figures (control.key_accuracy, plan_reading.rho_arousal, ...) are metrics and tags too
    metrics = figures(tracking.flatten(evaluation))
    with tracking.stage_run("register", params) as run:
        mlflow.log_metrics(metrics)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=BayesBeatsModel(),
            artifacts={"model_dir": str(MODEL_DIR)},
            signature=SIGNATURE,
            code_paths=[str(Path(__file__).parent)],
            input_example=pd.DataFrame({"prompt": ["a calm lake at dawn"], "duration_s": [2.0], "seed": [0]}),
            pip_requirements=[r for r in requires("bayes_beats") or [] if "extra ==" not in r],
        )
        version = mlflow.register_model(info.model_uri, MODEL_NAME)
        client = MlflowClient()
        for key, value in metrics.items():
            client.set_model_version_tag(MODEL_NAME, version.version, key, str(value))
        client.set_model_version_tag(MODEL_NAME, version.version, "run_id", run.info.run_id)
        alias, reason = gate(client, metrics, params.register)
        client.set_registered_model_alias(MODEL_NAME, alias, version.version)
    write_json(paths.REGISTER_METRICS, {"version": int(version.version), "alias": alias, "reason": reason})
    print(f"bayes-beats v{version.version} → {alias}: {reason}")
