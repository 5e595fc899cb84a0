"""The tiny profile's denoiser: diffusers' ACE-Step DiT and condition encoder at a size 2 CPU cores train.
Conditioning (`conditioning`) and sampling (`pipeline`) are the same for every profile."""

from __future__ import annotations

import torch
from diffusers import AceStepConditionEncoder, AceStepTransformer1DModel

from bayes_beats.core.config import ModelParams
from bayes_beats.model.codec import SpectrogramCodec


def build_tiny_denoiser(
    codec: SpectrogramCodec, params: ModelParams, text_dim: int = 384
) -> tuple[AceStepTransformer1DModel, AceStepConditionEncoder]:
    """A fresh tiny DiT and condition encoder (random weights), sized for 2 CPU cores."""
    torch.manual_seed(params.seed)
    channels = codec.config.n_bands
    heads = params.hidden_size // params.head_dim
    transformer = AceStepTransformer1DModel(
        hidden_size=params.hidden_size,
        intermediate_size=3 * params.hidden_size,
        num_hidden_layers=params.num_layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=params.head_dim,
        in_channels=3 * channels,  # source latents + chunk mask + x_t
        audio_acoustic_hidden_dim=channels,
        patch_size=2,
        sliding_window=128,
        is_turbo=True,
    )
    condition_encoder = AceStepConditionEncoder(
        hidden_size=params.hidden_size,
        intermediate_size=3 * params.hidden_size,
        text_hidden_dim=text_dim,
        timbre_hidden_dim=channels,
        num_lyric_encoder_hidden_layers=1,
        num_timbre_encoder_hidden_layers=1,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=params.head_dim,
    )
    # real checkpoints hold the codec's encoding of silence here; a fresh buffer is zeros
    with torch.no_grad():
        silence = codec.encode(torch.zeros(1, codec.config.sampling_rate * 2))[0].T  # [frames, bands]
        condition_encoder.silence_latent.copy_(silence[:1].expand_as(condition_encoder.silence_latent[0])[None])
    return transformer, condition_encoder
