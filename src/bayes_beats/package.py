"""`package` stage: the registry's champion → the BentoML model store → a Bento (service, page, catalog,
the project wheel, pinned Python deps, the exact model tags it serves). Reads the alias at run time, so a
champion moved in the MLflow UI is what the next `bayes-beats package` builds."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

from bayes_beats.core import paths, tracking
from bayes_beats.core.atomic import write_json
from bayes_beats.core.config import Params
from bayes_beats.core.paths import REGISTERED_MODEL as MODEL_NAME
from bayes_beats.core.tracking import TrackingError

log = logging.getLogger(__name__)
SERVING = Path("serving")
CLAP_DIR = paths.CLAP  # the request log's clap_local scorer travels with the Bento


def champion_version(alias: str) -> tuple[str, dict[str, str]]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        version = MlflowClient().get_model_version_by_alias(MODEL_NAME, alias)
    except MlflowException:
        raise TrackingError(
            f"the registry at {tracking.tracking_uri()} has no {MODEL_NAME} version with alias '{alias}': "
            "promote one (`dvc repro register`, or set the alias in the MLflow UI)"
        ) from None
    return version.version, dict(version.tags)


def import_clap(name: str):
    import bentoml

    if not (CLAP_DIR / "config.json").is_file():
        raise TrackingError(f"no CLAP model at {CLAP_DIR} for the service's request log: run `dvc repro clap`")
    with bentoml.models.create(name, labels={"source": str(CLAP_DIR)}) as model:
        shutil.copytree(CLAP_DIR, model.path, dirs_exist_ok=True)
    return model


def build_wheel() -> Path:
    """The project as a wheel for the Bento (its deps come from the wheel's pinned requirements)."""
    out = SERVING / "wheels"
    for old in out.glob("bayes_beats-*.whl"):
        old.unlink()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), "."],
        check=True,
    )
    return next(out.glob("bayes_beats-*.whl"))


def run(params: Params) -> None:
    import bentoml

    pp = params.package
    tracking.setup()
    version, tags = champion_version(pp.alias)
    model = bentoml.mlflow.import_model(
        pp.bento_model,
        f"models:/{MODEL_NAME}@{pp.alias}",
        labels={"registry_version": version, "alias": pp.alias},
        metadata={k: v for k, v in tags.items() if k != "run_id"},
    )
    clap = import_clap(f"{pp.bento_model}-clap")
    wheel = build_wheel()
    # the exact tags, recorded in the Bento (bento.yaml `args`, serving/service.py reads them back): the Bento
    # serves the model it was built with, whatever newer `bayes-beats` model the store gets later
    # and the features stage's settings, which the request log measures the served audio with
    # and the listeners' limits (votes, new ids, retention), which the vote store applies, and the radio's settings
    pinned = {
        "model_tag": str(model.tag),
        "clap_tag": str(clap.tag),
        "features": params.features.model_dump_json(),
        "listeners": params.listeners.model_dump_json(),
        "stream": params.stream.model_dump_json(),
    }
    bento = bentoml.bentos.build_bentofile(str(SERVING / "bentofile.yaml"), build_ctx=str(SERVING), args=pinned)
    size_mb = sum(f.stat().st_size for f in Path(bento.path).rglob("*") if f.is_file()) / 1e6
    write_json(
        paths.PACKAGE_METRICS,
        {
            "bento": str(bento.tag),
            "model": str(model.tag),
            "clap_model": str(clap.tag),
            "registry_version": int(version),
            "wheel": wheel.name,
            "bento_mb": round(size_mb, 1),
        },
    )
    print(f"bento {bento.tag}: champion v{version} as {model.tag} ({size_mb:.0f} MB); containerize with `make images`")
