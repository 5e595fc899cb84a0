"""What the frozen models make of dataset rows: codec latents, caption-variant token states, sentence
embeddings and the metas. The `encode` stage caches it; training without a cache computes it live."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import torch

from bayes_beats.core.config import Params
from bayes_beats.model.pipeline import AudioEncoder, embed, encode_lyrics, encode_text, format_prompt
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


def beat_phase(audio: np.ndarray, sr: int, bpm: float) -> float:
    """Time of the first tracked beat: aligns the training sketch's grid with the clip's own beats."""
    _, beats = librosa.beat.beat_track(y=audio, sr=sr, bpm=bpm, units="time")
    return float(beats[0] % (60.0 / bpm)) if len(beats) else 0.0


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
    return {
        "latents": latents.contiguous(),
        "text_states": states.half().view(len(rows), len(VARIANTS), *states.shape[1:]),  # fp16 halves the cache
        "text_mask": masks.view(len(rows), len(VARIANTS), -1).to(torch.uint8),
        "embeddings": embed(tokenizer, text_encoder, texts).view(len(rows), len(VARIANTS), -1),
        "bpm": torch.tensor([float(r["bpm"]) for r in rows]),
        "major": torch.tensor([parse_keyscale(k)[1] == "major" for k in keyscales], dtype=torch.float32),
        "phase": torch.tensor([beat_phase(a, sr, r["bpm"]) for a, r in zip(audio, rows, strict=True)]),
        "lyric_states": lyric_states[0].contiguous(),
        "lyric_mask": lyric_mask[0].to(torch.uint8),
        "keyscale": keyscales,
    }
