"""Every path a stage reads or writes, relative to the workspace root: the one place each is named.

dvc.yaml names the same paths (a test checks that every path here that dvc.yaml mentions agrees)."""

from __future__ import annotations

import json
from pathlib import Path

# data/: one directory a stage, written whole (atomic_dir)
RAW = Path("data/raw")  # corpus: MTG-Jamendo layout + ground_truth.csv
CACHE = Path("data/cache")  # gcs downloads, keyed by object path
CHECKPOINT_CACHE = CACHE / "checkpoints"  # model.checkpoint_dir=gs://... lands here
SAMPLED = Path("data/sampled")
MANIFEST = SAMPLED / "manifest.csv"
SAMPLED_SKIPS = SAMPLED / "skipped.json"
FEATURES = Path("data/features")
FEATURES_TABLE = FEATURES / "features.parquet"
FEATURES_SKIPS = FEATURES / "skipped.json"
LABELS = Path("data/labels")
LABELS_TABLE = LABELS / "labels.parquet"
DATASET = Path("data/dataset")
ENCODED = Path("data/encoded")
TRAIN_CACHE = ENCODED / "train.safetensors"
TRAFFIC = Path("data/traffic")  # the monitor's reference and the demo's sample traffic, from one draw
TRAFFIC_REFERENCE = TRAFFIC / "reference.csv"
TRAFFIC_SAMPLE = TRAFFIC / "requests.csv"

# models/ and training checkpoints (checkpoint-N dirs, kept across runs for resume)
CODEC = Path("models/codec")
BASE = Path("models/base")
FINETUNED = Path("models/finetuned")
CLAP = Path("models/clap")
PRETRAIN_CHECKPOINTS = Path("checkpoints/pretrain")
FINETUNE_CHECKPOINTS = Path("checkpoints/finetune")

# reports/ (HTML, PNG, WAV for people) and metrics/ (JSON/CSV for dvc metrics / plots)
REPORTS = Path("reports")
DATA_QUALITY_REPORT = REPORTS / "data_quality.html"
DATA_QUALITY_JSON = REPORTS / "data_quality.json"
CODEC_ROUNDTRIP_PNG = REPORTS / "codec_roundtrip.png"
EVAL_REPORTS = REPORTS / "eval"
EVAL_REQUESTS = EVAL_REPORTS / "requests.csv"  # the monitor's reference
EVAL_VOCABULARY = EVAL_REPORTS / "vocabulary.txt"
MONITOR_REPORT = REPORTS / "monitor.html"
MONITOR_JSON = REPORTS / "monitor.json"
MONITOR_PROM = REPORTS / "monitor.prom"  # the verdict as Prometheus gauges

METRICS = Path("metrics")
DATA_METRICS = METRICS / "data.json"
CODEC_METRICS = METRICS / "codec.json"
PRETRAIN_METRICS = METRICS / "pretrain.json"
PRETRAIN_LOSS = METRICS / "pretrain_loss.csv"
FINETUNE_METRICS = METRICS / "finetune.json"
FINETUNE_LOSS = METRICS / "finetune_loss.csv"
CLAP_METRICS = METRICS / "clap.json"
EVAL_METRICS = METRICS / "eval.json"
EVAL_PER_MOOD = METRICS / "eval_per_mood.csv"
EVAL_SPECTROGRAMS = METRICS / "eval_spectrograms.png"
REGISTER_METRICS = METRICS / "register.json"
PACKAGE_METRICS = METRICS / "package.json"
MONITOR_METRICS = METRICS / "monitor.json"

# names shared by the registry, the BentoML store and the service
REGISTERED_MODEL = "bayes-beats"  # MLflow registered model
EXPERIMENT = "bayes-beats"  # MLflow experiment


# a model directory: a saved pipeline (models/base, tiny), a pointer to one that lives elsewhere
# (models/base, acestep15), or a fine-tune carrying either beside its adapter and heads (models/finetuned)
BASE_POINTER = "base.json"  # {"checkpoint_dir": ...}


def base_pipeline(model_dir: Path) -> Path | None:
    """The diffusers pipeline directory a model directory runs on: the base/ it carries, the checkpoint its
    base.json names, or itself when it is a saved pipeline; None when it is none of these."""
    model_dir = Path(model_dir)
    if (model_dir / "base").is_dir():
        return model_dir / "base"
    if (model_dir / BASE_POINTER).is_file():
        return Path(json.loads((model_dir / BASE_POINTER).read_text())["checkpoint_dir"])
    return model_dir if (model_dir / "model_index.json").is_file() else None
