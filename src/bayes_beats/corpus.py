"""`corpus` stage (synth only): the embedded default, a seeded procedural mood-music corpus written in
the MTG-Jamendo layout → data/raw/autotagging_moodtheme.tsv, data/raw/NN/<id>.<ext>, ground_truth.csv."""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from bayes_beats.core import paths
from bayes_beats.core.atomic import atomic_dir, atomic_path
from bayes_beats.core.config import CorpusParams, Params
from bayes_beats.data.synth import plan_track, render_track
from bayes_beats.music.moods import TAG_PREFIX

log = logging.getLogger(__name__)
# spawn, not fork: a forked child of a process that already runs torch/OpenMP threads can die at random
SPAWN = multiprocessing.get_context("spawn")
OUT_DIR = paths.RAW
TSV_NAME = "autotagging_moodtheme.tsv"
SUBTYPES = {"wav": "PCM_16", "flac": "PCM_16", "mp3": "MPEG_LAYER_III", "ogg": "VORBIS"}


def _make_track(job: tuple[int, CorpusParams, Path]) -> dict:
    index, params, root = job
    track_number = index + 1
    rng = np.random.default_rng([params.seed, index])  # per-track stream: same track whatever the worker
    plan = plan_track(rng)
    audio = render_track(plan, params.track_seconds, params.sample_rate, rng)
    rel = f"{track_number % 100:02d}/{track_number}.{params.format}"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    sf.write(root / rel, audio, params.sample_rate, subtype=SUBTYPES[params.format])
    return {
        "track_id": f"track_{track_number:07d}",
        "artist_id": f"artist_{rng.integers(1, 200):06d}",
        "album_id": f"album_{rng.integers(1, 400):06d}",
        "path": rel,
        "duration": params.track_seconds,
        "tags": ",".join(plan.tags),
        "bpm": plan.bpm,
        "key": plan.keyscale.split()[0],
        "mode": plan.mode,
        "keyscale": plan.keyscale,
        "timesignature": 4,
        "valence": round(plan.valence, 4),
        "arousal": round(plan.arousal, 4),
        "lead": plan.lead,
        "pad": plan.pad,
        "style": plan.style,
        "melody_notes_per_beat": plan.melody_notes_per_beat,
        "cutoff_hz": round(plan.cutoff_hz, 1),
        "level_db": round(plan.level_db, 2),
    }


def _write_tsv(path: Path, rows: list[dict], prefix: str, tags_of) -> None:
    lines = ["\t".join(("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS"))]
    for r in rows:
        cols = [r["track_id"], r["artist_id"], r["album_id"], r["path"], f"{r['duration']:.1f}"]
        lines.append("\t".join(cols + [f"{prefix}{t}" for t in dict.fromkeys(tags_of(r))]))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())  # CRLF, as the real files


def generate(params: CorpusParams, out_dir: Path) -> pd.DataFrame:
    """Write the corpus into `out_dir` (replaced atomically) and return its ground truth."""
    with atomic_dir(out_dir) as tmp:
        jobs = [(i, params, tmp) for i in range(params.n_tracks)]
        with ProcessPoolExecutor(params.workers, mp_context=SPAWN) as pool:
            rows = list(tqdm(pool.map(_make_track, jobs, chunksize=8), total=len(jobs), desc="corpus", unit="track"))
        truth = pd.DataFrame(rows)
        _write_tsv(tmp / TSV_NAME, rows, TAG_PREFIX, lambda r: r["tags"].split(","))
        # MTG-Jamendo's companion TSVs: what the style captions name (instruments, genre), never the mood
        _write_tsv(tmp / "autotagging_genre.tsv", rows, "genre---", lambda r: [r["style"]])
        _write_tsv(
            tmp / "autotagging_instrument.tsv",
            rows,
            "instrument---",
            lambda r: [r["lead"], r["pad"], "bass", "drums"],
        )
        with atomic_path(tmp / "ground_truth.csv") as gt:
            truth.to_csv(gt, index=False)
    return truth


def run(params: Params) -> None:
    if params.data.source != "synth":
        # keep the DVC output present but empty: real data is read in place by `sample`
        with atomic_dir(OUT_DIR) as tmp:
            (tmp / "README.txt").write_text(f"data.source={params.data.source}: no synthetic corpus generated\n")
        log.info("corpus: data.source=%s, nothing to generate", params.data.source)
        return
    truth = generate(params.corpus, OUT_DIR)
    log.info("corpus: %d tracks in %s", len(truth), OUT_DIR)
