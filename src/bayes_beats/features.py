"""`features` stage: per clip, what librosa measures — tempo, key and mode, loudness, brightness, onset
rate, chroma and MFCC summaries → data/features/features.parquet. Parallel over clips."""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
from tqdm import tqdm

from bayes_beats.core import paths
from bayes_beats.core.atomic import atomic_path, write_json
from bayes_beats.core.config import FeaturesParams, Params
from bayes_beats.core.skips import SkipLog
from bayes_beats.music.analysis import extract
from bayes_beats.music.audio import AudioError, load_audio

log = logging.getLogger(__name__)
# spawn, not fork: a forked child of a process that already runs torch/OpenMP threads can die at random
SPAWN = multiprocessing.get_context("spawn")
OUT_DIR = paths.FEATURES


def _warm_up(sr: int, params: FeaturesParams) -> None:
    # numba compiles librosa's kernels on first use (~1.5 s): pay it once per worker, not per clip
    extract(np.random.default_rng(0).standard_normal(sr * 2).astype(np.float32) * 0.1, sr, params)


def _extract_clip(job: tuple[str, str, int, FeaturesParams]) -> tuple[str, dict | None, str, str]:
    clip_id, path, sr, params = job
    try:
        audio = load_audio(path, sr)
    except AudioError as err:
        return clip_id, None, err.reason, err.detail
    if not np.any(audio):
        return clip_id, None, "silent", path
    return clip_id, extract(audio, sr, params), "", ""


def compute(manifest: pd.DataFrame, sr: int, params: FeaturesParams, skips: SkipLog) -> pd.DataFrame:
    """Features of every clip in the manifest (columns clip_id, path), `params.workers` processes."""
    jobs = [(row.clip_id, str(row.path), sr, params) for row in manifest.itertuples()]
    rows = []
    # compile librosa's numba kernels here first: numba writes its on-disk cache on first use, and workers
    # compiling at the same moment on a fresh install wrote a corrupt cache that later segfaulted
    _warm_up(sr, params)
    with ProcessPoolExecutor(params.workers, mp_context=SPAWN, initializer=_warm_up, initargs=(sr, params)) as pool:
        results = pool.map(_extract_clip, jobs, chunksize=4)
        for clip_id, feats, reason, detail in tqdm(results, total=len(jobs), desc="features", unit="clip"):
            if feats is None:
                skips.skip(reason, clip_id, detail)
            else:
                rows.append({"clip_id": clip_id, **feats})
    return pd.DataFrame(rows)


def run(params: Params) -> None:
    manifest = pd.read_csv(paths.MANIFEST)
    skips = SkipLog("features")
    features = compute(manifest, params.sample.sample_rate, params.features, skips)
    if features.empty:
        raise RuntimeError(f"features: no clip could be analysed ({skips.summary()})")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with atomic_path(OUT_DIR / "features.parquet") as tmp:
        features.to_parquet(tmp, index=False)
    write_json(
        OUT_DIR / "skipped.json",
        {"clips_in": len(manifest), "clips_kept": len(features), "skipped": skips.as_dict()},
    )
    log.info("features: %d clips analysed, %s", len(features), skips.summary())
