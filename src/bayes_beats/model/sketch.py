"""The per-frame structural hint: a beat grid and the current chord's chroma, computed from the metas
(bpm, keyscale) alone. A tiny DiT does not learn tempo or mode from text; it follows this sketch
(docs/design.md, "The tiny profile, measured"). Same function in training and at inference."""

from __future__ import annotations

import math

import torch

from bayes_beats.music.theory import HARMONIC_MINOR, MAJOR, NATURAL_MINOR, parse_keyscale

SKETCH_CHANNELS = 16  # 4 beat-grid + 12 chroma
CHROMA = slice(4, 16)  # the chroma channels: dropped (zeroed) for sketch guidance
PROGRESSION = (0, 3, 4, 0)  # I–IV–V–I / i–iv–V–i, two beats a chord


def sketch(bpm: float, keyscale: str, frames: int, frame_rate: float, phase_s: float = 0.0) -> torch.Tensor:
    """→ [frames, 16]: cos/sin at the beat and half-beat rate, then chord tones +1 / others −1."""
    tonic, mode = parse_keyscale(keyscale)
    t = torch.arange(frames, dtype=torch.float32) / frame_rate - phase_s
    beats = t * bpm / 60.0
    grid = torch.stack(
        [
            torch.cos(2 * math.pi * beats),
            torch.sin(2 * math.pi * beats),
            torch.cos(4 * math.pi * beats),
            torch.sin(4 * math.pi * beats),
        ],
        dim=-1,
    )
    scale = MAJOR if mode == "major" else NATURAL_MINOR
    chroma = -torch.ones(frames, 12)
    chord_index = torch.div(beats.clamp(min=0), 2, rounding_mode="floor").long() % len(PROGRESSION)
    for i, degree in enumerate(PROGRESSION):
        chord_scale = HARMONIC_MINOR if (mode == "minor" and degree == 4) else scale
        tones = [(tonic + chord_scale[(degree + k) % 7]) % 12 for k in (0, 2, 4)]
        rows = chord_index == i
        for tone in tones:
            chroma[rows, tone] = 1.0
    return torch.cat([grid, chroma], dim=-1)
