"""The one place that mirrors diffusers internals (ACE-Step in diffusers 0.42.1), each because no public
API does what is needed; tests/test_model.py pins the version and compares every mirror with its original.

- `encode_conditions`: `AceStepConditionEncoder.forward` with the timbre step taken as an argument. The
  text-to-music reference is always the same silence and the timbre encoder is frozen, so its encoding is
  computed once (`conditioning.FrozenTimbre`); diffusers' forward runs it on every item of every call (at
  batch 16, a third of a training step here). Its packing helper is private, so it is copied.
- `metadata_string` and `timestep_schedule`: ACE-Step's prompt metas block and its shifted timestep
  schedule, which diffusers keeps as underscore methods of the pipeline; the prompt template constants
  are read from diffusers' pipeline module here and nowhere else.

On an upgrade, rerun `tests/test_model.py -k adapter`: it fails until this module matches the new release
and `DIFFUSERS_VERSION` is moved."""

from __future__ import annotations

import torch
from diffusers.pipelines.ace_step.pipeline_ace_step import DEFAULT_DIT_INSTRUCTION, SFT_GEN_PROMPT

__all__ = ["DEFAULT_DIT_INSTRUCTION", "SFT_GEN_PROMPT", "encode_conditions", "metadata_string", "timestep_schedule"]

DIFFUSERS_VERSION = "0.42.1"  # the release every mirror below was copied from and is tested against


def pack_sequences(
    hidden1: torch.Tensor, hidden2: torch.Tensor, mask1: torch.Tensor, mask2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' `_pack_sequences`: two masked sequences as one, each item's valid tokens first."""
    hidden = torch.cat([hidden1, hidden2], dim=1)
    mask = torch.cat([mask1, mask2], dim=1)
    batch, length, dim = hidden.shape
    order = mask.argsort(dim=1, descending=True, stable=True)
    packed = torch.gather(hidden, 1, order.unsqueeze(-1).expand(batch, length, dim))
    lengths = mask.sum(dim=1)
    return packed, torch.arange(length, dtype=torch.long, device=hidden.device).unsqueeze(0) < lengths.unsqueeze(1)


def encode_conditions(
    condition_encoder,
    text_states: torch.Tensor,
    text_mask: torch.Tensor,
    lyric_states: torch.Tensor,
    lyric_mask: torch.Tensor,
    timbre: torch.Tensor,
    timbre_mask: torch.Tensor,
) -> torch.Tensor:
    """`AceStepConditionEncoder.forward` → the DiT's cross-attention states [batch, tokens, hidden], the
    timbre encoder's (states, mask) given ([batch or 1, 1, hidden], [batch or 1, 1]; expanded here)."""
    batch = text_states.shape[0]
    text = condition_encoder.text_projector(text_states)
    lyric = condition_encoder.lyric_encoder(inputs_embeds=lyric_states, attention_mask=lyric_mask)
    timbre = timbre.expand(batch, *timbre.shape[1:])
    timbre_mask = timbre_mask.expand(batch, *timbre_mask.shape[1:])
    states, mask = pack_sequences(lyric, timbre, lyric_mask, timbre_mask)
    return pack_sequences(states, text, mask, text_mask)[0]


def metadata_string(bpm: int | None, keyscale: str | None, timesignature: str | None, seconds: float | None) -> str:
    """`AceStepPipeline._build_metadata_string`: the metas block of ACE-Step's SFT prompt."""
    bpm_str = str(bpm) if bpm is not None and bpm > 0 else "N/A"
    ts_str = timesignature if timesignature and timesignature.strip() else "N/A"
    ks_str = keyscale if keyscale and keyscale.strip() else "N/A"
    dur_str = f"{int(seconds)} seconds" if seconds is not None and seconds > 0 else "30 seconds"
    return f"- bpm: {bpm_str}\n- timesignature: {ts_str}\n- keyscale: {ks_str}\n- duration: {dur_str}\n"


def timestep_schedule(num_steps: int, shift: float, device=None) -> torch.Tensor:
    """`AceStepPipeline._get_timestep_schedule`: t from 1 (noise) toward 0, flow-shifted, the 0 dropped."""
    t = torch.linspace(1.0, 0.0, num_steps + 1, device=device, dtype=torch.float32)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return t[:-1]
