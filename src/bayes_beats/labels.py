"""`labels` stage: per clip, a vibe caption from its mood tags and measured features, with paraphrases
in ACE-Step's `recaption` dict, and a style-only caption (instruments and genre, no mood words) for the
base model → data/labels/labels.parquet. Deterministic: the same clip always gets the same words."""

from __future__ import annotations

import hashlib
import json
import logging

import pandas as pd

from bayes_beats.core import paths
from bayes_beats.core.atomic import atomic_path
from bayes_beats.core.config import LabelsParams, Params
from bayes_beats.music.moods import MOOD_VA, VIBE_WORDS, tempo_word, valence_arousal

log = logging.getLogger(__name__)
OUT_DIR = paths.LABELS


def _pick(options: list[str], clip_id: str, salt: str) -> str:
    digest = hashlib.sha256(f"{clip_id}:{salt}".encode()).digest()
    return options[digest[0] % len(options)]


def _level(x: float, threshold: float) -> str:
    return "high" if x > threshold else ("low" if x < -threshold else "mid")


def describe(clip: dict, params: LabelsParams) -> dict[str, str | float]:
    """One clip (manifest + features row as a dict) → captions."""
    tags = [t for t in str(clip["tags"]).split(",") if t in MOOD_VA]
    valence, arousal = valence_arousal(tags)
    cid = clip["clip_id"]
    vibe = _pick(
        VIBE_WORDS[(_level(valence, params.vibe_threshold), _level(arousal, params.vibe_threshold))],
        cid,
        "vibe",
    )
    genre = (str(clip.get("genres") or "").split(",")[0]) or "instrumental"
    instruments = [i for i in str(clip.get("instruments") or "").split(",") if i]
    lead = instruments[0] if instruments else "instrumental"
    tone = (
        "bright"
        if clip["centroid_hz"] > params.bright_centroid_hz
        else ("dark-toned" if clip["centroid_hz"] < params.dark_centroid_hz else "warm-toned")
    )
    rhythm = (
        "busy"
        if clip["onset_rate"] > params.busy_onsets_per_s
        else ("sparse" if clip["onset_rate"] < params.sparse_onsets_per_s else "steady")
    )
    bpm, keyscale = round(float(clip["bpm"])), clip["keyscale"]
    moods = ", ".join(tags[:3])
    with_what = f" with {' and '.join(instruments[:2])}" if instruments else ""
    caption = f"{moods}, {tempo_word(bpm)} and {tone} {lead} {genre} in {keyscale} at {bpm} BPM, {vibe}"
    return {
        "caption": caption,
        # the base model's caption: instruments, genre and texture, no mood words (those are the LoRA's)
        "style_caption": f"{genre}{with_what}, {rhythm} rhythm",
        "recaption": json.dumps(
            {
                "simplified": f"{vibe} {genre}, {moods}",
                "expanded": f"A {vibe}, {tempo_word(bpm)} {genre} piece{with_what}, {tone} and {rhythm}; "
                f"it feels {moods}. {keyscale}, {bpm} BPM.",
                "descriptive": f"{tone.capitalize()} {lead} over a {rhythm} beat: {moods}, {vibe}.",
                "tags": ", ".join([*tags, genre, *instruments[:2], tempo_word(bpm)]),
                "style": f"{genre}{with_what}",
            },
            sort_keys=True,
        ),
        "valence": round(valence, 4),
        "arousal": round(arousal, 4),
    }


def run(params: Params) -> None:
    manifest = pd.read_csv(paths.MANIFEST, keep_default_na=False)
    features = pd.read_parquet(paths.FEATURES_TABLE)
    clips = manifest.merge(features, on="clip_id", how="inner")  # clips the features stage skipped drop out here
    labels = pd.DataFrame([{"clip_id": c["clip_id"], **describe(c, params.labels)} for c in clips.to_dict("records")])
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with atomic_path(OUT_DIR / "labels.parquet") as tmp:
        labels.to_parquet(tmp, index=False)
    log.info("labels: %d clips captioned, e.g. %r", len(labels), labels["caption"].iloc[0])
