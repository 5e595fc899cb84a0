"""`data_quality` stage: an Evidently data-summary report of the clip features, per split →
reports/data_quality.html (+ .json), so a person sees the distributions before training on them."""

from __future__ import annotations

import logging

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset, DataSummaryPreset

from bayes_beats.core import paths
from bayes_beats.core.atomic import atomic_path
from bayes_beats.core.config import Params

log = logging.getLogger(__name__)
OUT = paths.DATA_QUALITY_REPORT


def run(params: Params) -> None:
    features = pd.read_parquet(paths.FEATURES_TABLE)
    import datasets

    splits = datasets.load_from_disk(str(paths.DATASET))
    split_of = {k: s for s in splits for k in splits[s]["keys"]}
    features = features.assign(split=features["clip_id"].map(split_of)).dropna(subset=["split"])
    columns = list(params.data_quality.columns)
    definition = DataDefinition(numerical_columns=columns, categorical_columns=["mode", "key"])
    train = Dataset.from_pandas(
        features[features["split"] == "train"][columns + ["mode", "key"]], data_definition=definition
    )
    held_out = Dataset.from_pandas(
        features[features["split"] != "train"][columns + ["mode", "key"]], data_definition=definition
    )
    # summary of the held-out clips, and whether they are distributed like the training clips
    snapshot = Report([DataSummaryPreset(), DataDriftPreset()]).run(current_data=held_out, reference_data=train)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(OUT) as tmp:
        snapshot.save_html(str(tmp))
    with atomic_path(paths.DATA_QUALITY_JSON) as tmp:
        snapshot.save_json(str(tmp))
    log.info("data_quality: report on %d clips at %s", len(features), OUT)
