"""The tiny profile's denoiser and the two diffusers classes every profile's DiT and condition encoder are
built as: `SketchGuidedTransformer` (the ACE-Step DiT plus guidance on the sketch) and
`SharedTimbreConditionEncoder` (the condition encoder, encoding one shared timbre reference once). Same
weights and config as the diffusers classes they extend; `VibePipeline` saves them under diffusers' names."""

from __future__ import annotations

import torch
from diffusers import AceStepConditionEncoder, AceStepTransformer1DModel
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.pipelines.ace_step.modeling_ace_step import _pack_sequences

from bayes_beats.core.config import ModelParams
from bayes_beats.model.codec import SpectrogramCodec
from bayes_beats.model.sketch import SKETCH_CHANNELS, double_time


class SketchGuidedTransformer(AceStepTransformer1DModel):
    """The ACE-Step DiT with classifier-free guidance on the sketch, asked for per call through
    `attention_kwargs={"sketch_guidance": scale}` (the pipeline passes its `attention_kwargs` to every DiT
    call). With scale != 1 each call also runs with the sketch channels of the source latents zeroed (as
    `sketch_dropout` trains) and returns v_u + scale * (v_sketch − v_u): the DiT sees a doubled batch.

    Beat guidance (`beat_guidance` h > 0, a scale or one per item) adds h * (v_sketch − v_double) while
    the timestep is above `beat_guidance_above_t`: a third branch renders the same sketch at double time
    and the sum steers away from it. Only the first, noisiest steps, where the rhythm forms: all steps cost key and mode
    (docs/ablation.md). Same weights and config as the parent; without the keys it is the parent."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        timestep_r: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        context_latents: torch.Tensor,
        attention_kwargs: dict | None = None,
        return_dict: bool = True,
    ):
        options = dict(attention_kwargs or {})
        scale = options.pop("sketch_guidance", 1.0)
        weights = torch.as_tensor(options.pop("beat_guidance", 0.0), dtype=hidden_states.dtype)  # scalar or per item
        beat_above_t = options.pop("beat_guidance_above_t", 1.0)
        early = bool((timestep > beat_above_t).all())  # the pipeline's steps share one t
        beat = weights.to(hidden_states.device).reshape(-1, 1, 1) if early and bool((weights != 0).any()) else None
        attention_kwargs = options or None
        if scale == 1.0 and beat is None:
            return super().forward(
                hidden_states,
                timestep,
                timestep_r,
                encoder_hidden_states,
                context_latents,
                attention_kwargs,
                return_dict,
            )
        dropped = context_latents.clone()
        dropped[..., :SKETCH_CHANNELS] = 0.0
        branches = [context_latents, dropped] + ([double_time(context_latents)] if beat is not None else [])
        n = len(branches)
        out = super().forward(
            hidden_states=hidden_states.repeat(n, 1, 1),
            timestep=timestep.repeat(n),
            timestep_r=timestep_r.repeat(n),
            encoder_hidden_states=encoder_hidden_states.repeat(n, 1, 1),
            context_latents=torch.cat(branches),
            attention_kwargs=attention_kwargs,
            return_dict=False,
        )
        v_sketch, v_uncond, *v_double = out[0].chunk(n)
        guided = v_uncond + scale * (v_sketch - v_uncond)
        if v_double:
            guided = guided + beat * (v_sketch - v_double[0])
        return Transformer2DModelOutput(sample=guided) if return_dict else (guided, *out[1:])


class SharedTimbreConditionEncoder(AceStepConditionEncoder):
    """The ACE-Step condition encoder, encoding a timbre reference once when every batch item has the same.

    Text-to-music feeds 30 s of the silence latent as every item's timbre reference, and diffusers' encoder
    runs the timbre encoder on each copy: at batch 16 that was 0.75 s of a 2.3 s training step here. The
    result is identical, so `encode_timbre` runs it on one copy and expands. Same weights and config."""

    def forward(
        self,
        text_hidden_states: torch.FloatTensor,
        text_attention_mask: torch.Tensor,
        lyric_hidden_states: torch.FloatTensor,
        lyric_attention_mask: torch.Tensor,
        refer_audio_acoustic_hidden_states_packed: torch.FloatTensor,
        refer_audio_order_mask: torch.LongTensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # diffusers' AceStepConditionEncoder.forward (0.42.1), its timbre step through `encode_timbre`
        text_hidden_states = self.text_projector(text_hidden_states)
        lyric_hidden_states = self.lyric_encoder(inputs_embeds=lyric_hidden_states, attention_mask=lyric_attention_mask)
        timbre, timbre_mask = self.encode_timbre(refer_audio_acoustic_hidden_states_packed, refer_audio_order_mask)
        states, mask = _pack_sequences(lyric_hidden_states, timbre, lyric_attention_mask, timbre_mask)
        return _pack_sequences(states, text_hidden_states, mask, text_attention_mask)

    def encode_timbre(self, packed: torch.Tensor, order_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The timbre encoder's (states, mask) for packed references; one pass when all are one reference."""
        n = packed.shape[0]
        # one item counts too: a single-prompt request is the common case at serving time
        same = torch.equal(order_mask, torch.arange(n, device=order_mask.device)) and bool((packed == packed[:1]).all())
        if not same:
            return self.timbre_encoder(packed, order_mask)
        states, mask = self.encode_one_timbre(packed[:1], order_mask[:1])
        return states.expand(n, *states.shape[1:]), mask.expand(n, *mask.shape[1:])

    def encode_one_timbre(self, packed: torch.Tensor, order_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One reference's encoding, kept while neither the reference nor the timbre encoder's weights change
        and no gradient is asked of them (inference, finetune, pretrain's frozen timbre encoder). Text-to-music
        always passes the same silence, so after the first call this is a lookup: 30 s of reference is
        37 ms of every 10-s generation and of every training step here."""
        weights = list(self.timbre_encoder.parameters())
        if torch.is_grad_enabled() and any(w.requires_grad for w in weights):
            return self.timbre_encoder(packed, order_mask)
        key = (tuple((w.data_ptr(), w._version) for w in weights), packed.dtype, packed.device, packed.shape)
        memo = getattr(self, "_timbre_memo", None)
        if memo is not None and memo[0] == key and torch.equal(memo[1], packed):
            return memo[2]
        with torch.no_grad():
            encoded = self.timbre_encoder(packed, order_mask)
        self._timbre_memo = (key, packed.clone(), encoded)  # one tuple: a concurrent call sees old or new
        return encoded


def build_tiny_denoiser(codec: SpectrogramCodec, params: ModelParams, text_dim: int = 384):
    """A fresh tiny DiT and condition encoder (random weights), sized for 2 CPU cores."""
    torch.manual_seed(params.seed)
    channels = codec.config.n_bands
    heads = params.hidden_size // params.head_dim
    transformer = SketchGuidedTransformer(
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
    condition_encoder = SharedTimbreConditionEncoder(
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
