"""`sample` stage: a seeded choice of tracks from the source (synth corpus, local MTG-Jamendo or GCS),
random crops, loudness-normalised → data/sampled/clips/*.wav + data/sampled/manifest.csv."""

from __future__ import annotations

import hashlib
import logging
import warnings

import numpy as np
import pandas as pd
import pyloudnorm
from tqdm import tqdm

from bayes_beats.core import paths
from bayes_beats.core.atomic import atomic_dir, atomic_path, write_json
from bayes_beats.core.config import DataParams, Params, SampleParams
from bayes_beats.core.skips import SkipLog
from bayes_beats.data.jamendo import DataError, LocalSource, Source, TrackRow, open_source, parse_side_tags, parse_tsv
from bayes_beats.music.audio import AudioError, load_audio, write_wav

log = logging.getLogger(__name__)
OUT_DIR = paths.SAMPLED


def source_for(data: DataParams) -> Source:
    # the synthetic corpus is always the `corpus` stage's output; data.path names real data
    return LocalSource(paths.RAW, data.tsv) if data.source == "synth" else open_source(data)


def candidates(rows: list[TrackRow], available: set[str], params: SampleParams, skips: SkipLog) -> list[TrackRow]:
    """Rows that pass the tag, duration and file-exists filters, in TSV order."""
    wanted = set(params.tags)
    kept = []
    for row in rows:
        if row.path not in available:
            skips.skip("missing_file", row.track_id, row.path)
        elif wanted and not wanted.intersection(row.tags):
            continue  # filtered by choice, not bad data: not a skip
        elif row.duration < params.clip_seconds or row.duration > params.max_track_seconds:
            skips.skip(
                "bad_duration",
                row.track_id,
                f"{row.duration:.1f} s outside [{params.clip_seconds}, {params.max_track_seconds}]",
            )
        else:
            kept.append(row)
    return kept


def crops(
    audio: np.ndarray, row: TrackRow, params: SampleParams, meter: pyloudnorm.Meter
) -> list[tuple[float, np.ndarray | None, float]]:
    """`clips_per_track` random crops, loudness-normalised → [(start_s, audio or None if silent, source_lufs)]."""
    sr, n = params.sample_rate, int(params.clip_seconds * params.sample_rate)
    # seeded by track id, so a track's crops do not depend on which other tracks were sampled
    digest = hashlib.sha256(f"{params.seed}:{row.track_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    out: list[tuple[float, np.ndarray | None, float]] = []
    for _ in range(params.clips_per_track):
        start = int(rng.integers(0, len(audio) - n + 1))
        clip = audio[start : start + n]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyloudnorm warns on clipping; the peak limit below handles it
            lufs = float(meter.integrated_loudness(clip))
            if not np.isfinite(lufs) or lufs < params.silence_lufs:
                out.append((start / sr, None, lufs))
                continue
            clip = pyloudnorm.normalize.loudness(clip, lufs, params.target_lufs)
        peak_limit = 10 ** (params.peak_dbfs / 20)
        clip = clip * min(1.0, peak_limit / (np.abs(clip).max() + 1e-12))
        out.append((start / sr, clip.astype(np.float32), lufs))
    return out


def run(params: Params) -> None:
    sp = params.sample
    skips = SkipLog("sample")
    source = source_for(params.data)
    mood_tsv = source.read_tsv()
    assert mood_tsv is not None
    rows, n_rows = parse_tsv(mood_tsv, skips)
    side = {c: parse_side_tags(source.read_tsv(f"autotagging_{c}.tsv") or b"", c) for c in ("genre", "instrument")}
    pool = candidates(rows, source.available([r.path for r in rows]), sp, skips)
    order = np.random.default_rng(sp.seed).permutation(len(pool))
    meter = pyloudnorm.Meter(sp.sample_rate)
    manifest = []
    with (
        atomic_dir(OUT_DIR) as tmp,
        tqdm(total=min(sp.n_tracks, len(pool)), desc="sample", unit="track") as bar,
    ):
        (tmp / "clips").mkdir()
        n_kept = 0
        # walk the shuffled pool until n_tracks are kept: a broken track is replaced by the next one
        for index in order:
            if n_kept == sp.n_tracks:
                break
            row = pool[index]
            try:
                audio = load_audio(source.fetch(row.path), sp.sample_rate)
            except AudioError as err:
                skips.skip(err.reason, row.track_id, err.detail)
                continue
            if len(audio) < sp.clip_seconds * sp.sample_rate:
                skips.skip("too_short", row.track_id, f"{len(audio) / sp.sample_rate:.2f} s decoded")
                continue
            kept_any = False
            for k, (start_s, clip, lufs) in enumerate(crops(audio, row, sp, meter)):
                clip_id = f"{row.track_id}_{k}"
                if clip is None:
                    skips.skip("silent_clip", clip_id, f"{lufs:.1f} LUFS")
                    continue
                write_wav(tmp / "clips" / f"{clip_id}.wav", clip, sp.sample_rate)
                manifest.append(
                    {
                        "clip_id": clip_id,
                        "track_id": row.track_id,
                        "path": str(OUT_DIR / "clips" / f"{clip_id}.wav"),
                        "source_path": row.path,
                        "start_s": round(start_s, 3),
                        "seconds": sp.clip_seconds,
                        "tags": ",".join(row.tags),
                        "source_lufs": round(lufs, 2),
                        "genres": ",".join(side["genre"].get(row.track_id, [])),
                        "instruments": ",".join(side["instrument"].get(row.track_id, [])),
                    }
                )
                kept_any = True
            n_kept += kept_any
            bar.update(int(kept_any))
        if not manifest:
            raise DataError(
                f"no usable tracks in {source.description}: 0 of {n_rows} TSV rows usable ({skips.summary()})"
            )
        with atomic_path(tmp / "manifest.csv") as out:
            pd.DataFrame(manifest).to_csv(out, index=False)
        write_json(
            tmp / "skipped.json",
            {
                "tracks_in": n_rows,
                "tracks_kept": n_kept,
                "clips_kept": len(manifest),
                "skipped": skips.as_dict(),
            },
        )
    log.info("sample: %d tracks, %d clips from %s; %s", n_kept, len(manifest), source.description, skips.summary())
