"""The per-frame structural hint the DiT follows: a beat grid, the current chord and the energy, computed
from the metas alone. A tiny DiT does not learn tempo or mode from text; it follows this sketch (docs/
design.md, "The tiny profile, measured"). Training draws it from each clip as it is (its measured beat
phase, its own per-beat chords, its energy); generation from the plan (a grid starting on a strong beat,
a progression drawn for the mode from the corpus's own, the planned energy). Same function for both."""

from __future__ import annotations

import math

import numpy as np
import torch

from bayes_beats.music.theory import HARMONIC_MINOR, MAJOR, NATURAL_MINOR

BEAT = slice(0, 4)  # cos/sin at the beat and the half-beat rate
HALF_BAR = slice(4, 6)  # cos/sin at the two-beat rate, 1 on the strong beats (kick) and −1 on the weak (snare)
CHROMA = slice(6, 18)  # the current chord: chord tones +1, others −1
ENERGY = slice(18, 19)  # the clip's energy percentile in the corpus, as 2p − 1
SKETCH_CHANNELS = 19
PROGRESSION_BEATS = 16  # what a drawn progression spans before it repeats (four bars of 4/4)

# a progression when there is no corpus to draw from (a base model has no planner): I–IV–V–I, two beats each
DEFAULT_DEGREES = (0, 0, 3, 3, 4, 4, 0, 0)


def sketch(
    bpm: float,
    chords: torch.Tensor,
    energy: float,
    frames: int,
    frame_rate: float,
    origin_s: float = 0.0,
    bpm_before: float | None = None,
) -> torch.Tensor:
    """→ [frames, SKETCH_CHANNELS]. `origin_s` is the time of a strong beat (≤ 0: at or before the first
    frame); beat k after it plays `chords[k % len(chords)]` ([n, 12] of ±1); `energy` is in [0, 1].
    `bpm_before`: the tempo before the origin (a stream's held tail, played at the last phrase's tempo)."""
    device = chords.device  # training passes chords on the accelerator (seen on an H200: a CPU grid failed)
    t = torch.arange(frames, dtype=torch.float32, device=device) / frame_rate - origin_s
    beats = t * bpm / 60.0
    if bpm_before is not None:
        beats = torch.where(t < 0, t * bpm_before / 60.0, beats)
    angle = [2 * math.pi * beats, 4 * math.pi * beats, math.pi * beats]
    grid = torch.stack([f(a) for a in angle for f in (torch.cos, torch.sin)], dim=-1)
    chord = chords.to(torch.float32)[torch.remainder(torch.floor(beats).long(), len(chords))]
    level = torch.full((frames, 1), 2.0 * energy - 1.0, device=device)
    return torch.cat([grid, chord, level], dim=-1)


def double_time(context: torch.Tensor) -> torch.Tensor:
    """The same sketch with its pulse twice as fast: beat phase θ → 2θ, by the double-angle identities on
    the grid channels of `context` ([..., channels] whose first SKETCH_CHANNELS are a sketch). What beat
    guidance steers away from: a renderer whose half-beat is as strong as its beat reads at double time."""
    out = context.clone()
    cos2, sin2 = context[..., 2], context[..., 3]  # the half-beat channels are cos/sin 2θ
    out[..., 0], out[..., 1] = cos2, sin2
    out[..., 2], out[..., 3] = cos2 * cos2 - sin2 * sin2, 2 * sin2 * cos2
    out[..., HALF_BAR] = context[..., 0:2]
    return out


def triad(tonic: int, mode: str, degree: int) -> list[int]:
    """Pitch classes of the triad on a scale degree (the minor's V from the harmonic minor, as music does)."""
    scale = MAJOR if mode == "major" else NATURAL_MINOR
    if mode == "minor" and degree == 4:
        scale = HARMONIC_MINOR
    return [(tonic + scale[(degree + k) % 7]) % 12 for k in (0, 2, 4)]


def chords_of(degrees: tuple[int, ...] | list[int], tonic: int, mode: str) -> torch.Tensor:
    """Scale degrees, one per beat → [beats, 12] of ±1."""
    out = -torch.ones(len(degrees), 12)
    for k, degree in enumerate(degrees):
        out[k, triad(tonic, mode, degree)] = 1.0
    return out


def transpose(relative: np.ndarray | torch.Tensor, tonic: int) -> torch.Tensor:
    """A progression stored relative to its tonic (C) → the same in `tonic`: [beats, 12] rolled."""
    return torch.roll(torch.as_tensor(relative, dtype=torch.float32), shifts=tonic, dims=-1)
