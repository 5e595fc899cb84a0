"""`dataset` stage: a Hugging Face DatasetDict in ACE-Step's fields, split by track → data/dataset/,
with the clips' audio beside it (`filename` is relative to data/dataset), and metrics/data.json."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from bayes_beats.core import paths
from bayes_beats.core.atomic import atomic_dir, write_json
from bayes_beats.core.config import DatasetParams, Params

log = logging.getLogger(__name__)
OUT_DIR = paths.DATASET
METRICS = paths.DATA_METRICS
SPLITS = ("train", "validation", "test")


def split_by_track(track_ids: pd.Series, params: DatasetParams) -> pd.Series:
    """Assign each track to one split (seeded), so no track's clips leak across splits."""
    tracks = np.array(sorted(track_ids.unique()))
    order = np.random.default_rng(params.seed).permutation(len(tracks))
    n_test = int(round(params.test_fraction * len(tracks))) if params.test_fraction else 0
    n_val = int(round(params.validation_fraction * len(tracks))) if params.validation_fraction else 0
    if len(tracks) >= 3:  # a requested split is never empty when there is anything to put in it
        n_test, n_val = max(n_test, params.test_fraction > 0), max(n_val, params.validation_fraction > 0)
    split = {}
    for rank, index in enumerate(order):
        split[tracks[index]] = "test" if rank < n_test else ("validation" if rank < n_test + n_val else "train")
    return track_ids.map(split)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # same filesystem: no second copy of the audio
    except OSError:
        shutil.copy2(src, dst)


def build(clips: pd.DataFrame, params: DatasetParams, out_dir: Path) -> dict[str, int]:
    clips = clips.assign(split=split_by_track(clips["track_id"], params))
    rows = pd.DataFrame(
        {
            "keys": clips["clip_id"],
            "filename": "audio/" + clips["clip_id"] + ".wav",
            "tags": clips["tags"].str.split(","),
            "speaker_emb_path": "",
            "norm_lyrics": "[instrumental]",
            "recaption": clips["recaption"].map(json.loads),
            "prompt": clips["caption"],
            "style_prompt": clips["style_caption"],
            "bpm": clips["bpm"].round().astype(int),
            "keyscale": clips["keyscale"],
            "timesignature": "4",
            "valence": clips["valence"].astype(float),
            "arousal": clips["arousal"].astype(float),
            "centroid_hz": clips["centroid_hz"].astype(float),
            "onset_rate": clips["onset_rate"].astype(float),
            "track_id": clips["track_id"],
            "split": clips["split"],
        }
    )
    with atomic_dir(out_dir) as tmp:
        (tmp / "audio").mkdir()
        for clip_id, path in zip(clips["clip_id"], clips["path"], strict=True):
            _link_or_copy(Path(path), tmp / "audio" / f"{clip_id}.wav")
        dd = datasets.DatasetDict(
            {
                s: datasets.Dataset.from_pandas(rows[rows["split"] == s].reset_index(drop=True), preserve_index=False)
                for s in SPLITS
            }
        )
        dd.save_to_disk(str(tmp))
    return {s: int((rows["split"] == s).sum()) for s in SPLITS}


def run(params: Params) -> None:
    manifest = pd.read_csv(paths.MANIFEST, keep_default_na=False)
    features = pd.read_parquet(paths.FEATURES_TABLE)
    labels = pd.read_parquet(paths.LABELS_TABLE)
    clips = manifest.merge(features, on="clip_id").merge(labels, on="clip_id")
    sizes = build(clips, params.dataset, OUT_DIR)
    sampled = json.loads(paths.SAMPLED_SKIPS.read_text())
    analysed = json.loads(paths.FEATURES_SKIPS.read_text())
    skipped = {
        k: sampled["skipped"].get(k, 0) + analysed["skipped"].get(k, 0)
        for k in sorted({*sampled["skipped"], *analysed["skipped"]})
    }
    write_json(
        METRICS,
        {
            "tracks_in": sampled["tracks_in"],
            "tracks_kept": sampled["tracks_kept"],
            "clips_in": sampled["clips_kept"],
            "clips_kept": len(clips),
            "skipped": skipped,
            "skipped_total": sum(skipped.values()),
            "splits": sizes,
        },
    )
    log.info("dataset: %s clips in %s", sizes, OUT_DIR)
