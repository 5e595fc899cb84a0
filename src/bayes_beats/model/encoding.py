"""What the frozen models make of dataset rows: codec latents, caption-variant token states, sentence
embeddings and the metas. The `encode` stage caches it; training without a cache computes it live."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from bayes_beats.core.config import Params
from bayes_beats.model.profiles import AudioEncoder
from bayes_beats.model.text import embed, encode_lyrics, encode_text, format_prompt
from bayes_beats.music.analysis import beat_chords, beat_grid
from bayes_beats.music.audio import load_audio
from bayes_beats.music.theory import parse_keyscale

# caption variants: 0 = style only (the base's captions), 1.. = vibe captions (the LoRA's)
VARIANTS = ("style", "caption", "simplified", "descriptive")


def variant_texts(row: dict) -> list[str]:
    return [
        row["style_prompt"],
        row["prompt"],
        row["recaption"]["simplified"],
        row["recaption"]["descriptive"],
    ]


def energy_raw(rows: list[dict]) -> np.ndarray:
    """What energy is made of, before it is ranked against the corpus: onsets per second and brightness
    (log centroid), each on a scale of its typical size, summed. (Loudness is not in it: `sample`
    normalises every clip to one loudness.)"""
    onset = np.array([float(r["onset_rate"]) for r in rows])
    centroid = np.log(np.array([float(r["centroid_hz"]) for r in rows]))
    return onset / 2.0 + centroid / 0.25  # ~1 sd of each on the corpus, so both count about the same


def energy_percentile(raw: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Raw energies → their percentile in [0, 1] among the training clips' (sorted `reference`)."""
    return (np.searchsorted(reference, raw, side="left") + np.searchsorted(reference, raw, side="right")) / (
        2.0 * len(reference)
    )


def pad_chords(chords: list[np.ndarray]) -> torch.Tensor:
    """Per-clip [beats, 12] → one int8 [clips, most beats, 12], each padded by repeating its last beat."""
    beats = max(len(c) for c in chords)
    padded = [np.concatenate([c, np.repeat(c[-1:], beats - len(c), axis=0)]) for c in chords]
    return torch.from_numpy(np.stack(padded)).to(torch.int8)


def encode_rows(rows: list[dict], root: Path, codec: AudioEncoder, tokenizer, text_encoder, params: Params) -> dict:
    """What the frozen models make of some dataset rows: the cache's tensors for just these rows."""
    sr = params.sample.sample_rate
    audio = [load_audio(root / r["filename"], sr) for r in rows]
    with torch.no_grad():
        latents = codec(torch.from_numpy(np.stack(audio))).transpose(1, 2)  # [batch, frames, channels]
    texts = [t for r in rows for t in variant_texts(r)]
    formatted = [
        format_prompt(t, r["bpm"], r["keyscale"], params.sample.clip_seconds) for r in rows for t in variant_texts(r)
    ]
    states, masks = encode_text(tokenizer, text_encoder, formatted)
    lyric_states, lyric_mask = encode_lyrics(tokenizer, text_encoder, 1)  # every clip is instrumental
    keyscales = [r["keyscale"] for r in rows]
    origins = [beat_grid(a, sr, r["bpm"]) for a, r in zip(audio, rows, strict=True)]
    chords = [
        beat_chords(a, sr, r["bpm"], o, math.ceil((len(a) / sr - o) * r["bpm"] / 60.0) + 1)
        for a, r, o in zip(audio, rows, origins, strict=True)
    ]
    return {
        "latents": latents.contiguous(),
        "text_states": states.half().view(len(rows), len(VARIANTS), *states.shape[1:]),  # fp16 halves the cache
        "text_mask": masks.view(len(rows), len(VARIANTS), -1).to(torch.uint8),
        "embeddings": embed(tokenizer, text_encoder, texts).view(len(rows), len(VARIANTS), -1),
        "bpm": torch.tensor([float(r["bpm"]) for r in rows]),
        "major": torch.tensor([parse_keyscale(k)[1] == "major" for k in keyscales], dtype=torch.float32),
        "origin": torch.tensor(origins),  # a strong beat at or before the clip's start (s)
        "chords": chords,  # per clip [beats, 12] of ±1 from `origin` on; `encode` pads them to one length
        "energy_raw": torch.from_numpy(energy_raw(rows)).float(),
        "valence": torch.tensor([float(r["valence"]) for r in rows]),
        "arousal": torch.tensor([float(r["arousal"]) for r in rows]),
        "lyric_states": lyric_states[0].contiguous(),
        "lyric_mask": lyric_mask[0].to(torch.uint8),
        "keyscale": keyscales,
    }
