"""What the DiT is conditioned on, built by one function for training (`train.Denoiser`) and inference
(`VibePipeline.__call__`): the cross-attention states (prompt tokens, instrumental lyrics, the timbre of
the silence reference) and the context latents (ACE-Step's source latents, here silence carrying the
per-frame sketch, beside a chunk mask of ones: generate every frame).

A continuation (a segment that carries on from the end of the previous one) takes the same path: its
sketch starts at the beat phase where the last segment ended (`Sketch.origin`, as training's crops do),
the previous tail is given in the context (`held`: ACE-Step's repaint source and chunk mask, trained by
`pretrain` and `finetune` on a share of crops) and the sampler holds it in the latents (docs/design.md,
"Sampler, conditioning and continuation")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bayes_beats.model.diffusers_adapter import encode_conditions
from bayes_beats.model.sketch import SKETCH_CHANNELS, sketch

TIMBRE_SECONDS = 30  # ACE-Step's timbre reference: 30 s of the silence latent when there is no reference audio


def frame_rate(vae_config) -> float:
    """Latent frames per second of a codec or VAE config (the tiny codec's hop or Oobleck's ratios)."""
    return float(vae_config["sampling_rate"]) / float(math.prod(vae_config["downsampling_ratios"]))


@dataclass
class Sketch:
    """What the sketch of each batch item is drawn from (`sketch.sketch`); `origin` (s) defaults to 0."""

    bpm: list[float]
    chords: list[torch.Tensor]
    energy: list[float]
    origin: list[float] | None = None
    bpm_before: list[float | None] | None = None  # per item, the tempo before its origin (None: `bpm`)


class FrozenTimbre:
    """The timbre encoder's encoding of the silence reference, computed once and kept.

    Text-to-music feeds every item the same reference and no stage trains the timbre encoder (pretrain
    leaves it at its seeded init, finetune freezes the whole condition encoder), so its encoding is one
    vector per model: one pass, not one per item per step (a fifth of a training step, docs/ablation.md).
    Kept per (encoder, device, dtype, autocast): moving or casting the model encodes again."""

    def __init__(self) -> None:
        self._held: tuple | None = None  # (key, encoding): one tuple, so a concurrent call sees old or new

    def __call__(self, condition_encoder, rate: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = condition_encoder.timbre_encoder
        if torch.is_grad_enabled() and any(p.requires_grad for p in encoder.parameters()):
            raise ValueError("the timbre encoder must be frozen: its encoding of silence is computed once")
        device = torch.device(device)
        key = (condition_encoder, device, dtype, torch.is_autocast_enabled(device.type))
        held = self._held
        if held is not None and held[0] == key:
            return held[1]
        frames = math.ceil(TIMBRE_SECONDS * rate)
        reference = condition_encoder.silence_latent[:, :frames].to(device=device, dtype=dtype)
        with torch.no_grad():
            encoded = encoder(reference, torch.arange(1, device=device))  # ([1, 1, hidden], [1, 1])
        self._held = (key, encoded)
        return encoded


def silence(condition_encoder, frames: int, batch: int, device, dtype) -> torch.Tensor:
    """Text-to-music's source latents: the silence latent [batch, frames, channels], tiled if too short."""
    latent = condition_encoder.silence_latent.to(device=device, dtype=dtype)
    if latent.shape[1] < frames:
        latent = latent.repeat(1, math.ceil(frames / latent.shape[1]), 1)
    return latent[:, :frames].expand(batch, -1, -1)


def with_sketch(src: torch.Tensor, drawn: Sketch, rate: float) -> torch.Tensor:
    """Source latents [batch, frames, channels] with the first SKETCH_CHANNELS replaced by the sketch."""
    frames = src.shape[1]
    if src.shape[-1] < SKETCH_CHANNELS:
        raise ValueError(
            f"the sketch takes {SKETCH_CHANNELS} latent channels; this model's latents have {src.shape[-1]}"
        )
    origins = drawn.origin or [0.0] * len(drawn.bpm)
    before = drawn.bpm_before or [None] * len(drawn.bpm)
    hint = torch.stack(
        [
            sketch(b, c, e, frames, rate, o, p)
            for b, c, e, o, p in zip(drawn.bpm, drawn.chords, drawn.energy, origins, before, strict=True)
        ]
    )
    src = src.clone()
    src[..., :SKETCH_CHANNELS] = hint.to(src)
    return src


def without_sketch(context: torch.Tensor) -> torch.Tensor:
    """Context latents with the sketch channels zeroed: what sketch dropout trains and guidance contrasts."""
    dropped = context.clone()
    dropped[..., :SKETCH_CHANNELS] = 0.0
    return dropped


def given(counts: torch.Tensor | list[int], frames: int, device: torch.device | str) -> torch.Tensor:
    """[batch, frames, 1] bool: each item's first `count` frames, the ones a continuation is given."""
    counts = torch.as_tensor(counts, device=device)
    return torch.arange(frames, device=device)[None, :, None] < counts[:, None, None]


def condition(
    condition_encoder,
    timbre: tuple[torch.Tensor, torch.Tensor],
    text_states: torch.Tensor,
    text_mask: torch.Tensor,
    lyric_states: torch.Tensor,
    lyric_mask: torch.Tensor,
    frames: int,
    rate: float,
    drawn: Sketch | None = None,
    dtype: torch.dtype | None = None,
    drop_sketch: torch.Tensor | None = None,
    drop_text: torch.Tensor | None = None,
    held: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """→ (encoder_hidden_states, context_latents) for the DiT, on `text_states`' device.

    text_states: the prompt's token states (already conditioned by the prompt head where there is one).
    timbre: `FrozenTimbre`'s encoding. drawn: each item's sketch (None: plain silence, no sketch).
    dtype: of the context (default: the silence latent's). drop_sketch / drop_text (training's condition
    dropout, [batch] bool): the item's sketch zeroed / its states replaced by ACE-Step's CFG null.
    held: (latents [batch, ≥ frames, channels], counts [batch]): a continuation, ACE-Step's repaint/extend
    context. An item's first `count` frames are given: their latents fill the source's audio channels (the
    sketch keeps its own, so the grid runs on through them) and the chunk mask is 0 there."""
    batch, device = text_states.shape[0], text_states.device
    states = encode_conditions(condition_encoder, text_states, text_mask, lyric_states, lyric_mask, *timbre)
    if drop_text is not None:
        null = condition_encoder.null_condition_emb.to(states).expand_as(states)
        states = torch.where(drop_text[:, None, None], null, states)
    dtype = dtype or condition_encoder.silence_latent.dtype
    src = silence(condition_encoder, frames, batch, device, dtype)
    if drawn is not None:
        src = with_sketch(src, drawn, rate)
    if drop_sketch is not None:
        keep = (~drop_sketch)[:, None, None].to(src)
        src[..., :SKETCH_CHANNELS] = src[..., :SKETCH_CHANNELS] * keep
    mask = torch.ones_like(src)  # chunk mask of ones: generate everything
    if held is not None:
        latents, counts = held
        held_frames = given(counts, frames, device)
        audio = torch.arange(src.shape[-1], device=device)[None, None, :] >= SKETCH_CHANNELS
        src = torch.where(held_frames & audio, latents[:, :frames].to(src), src)
        mask = torch.where(held_frames, torch.zeros_like(mask), mask)
    return states, torch.cat([src, mask], dim=-1)
