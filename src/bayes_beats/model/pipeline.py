"""One generator, two scales. `VibePipeline` is diffusers' AceStepPipeline plus two registered
components (the variational prompt head and the planner) and two overrides: prompts are encoded with
fixed padding and per-item metas (train and inference see the same tokens), and the source latents carry
the per-frame sketch, both from the `plan` argument of the call. Its DiT is a `SketchGuidedTransformer`
and its condition encoder a `SharedTimbreConditionEncoder`: diffusers' classes with sketch guidance and a
once-per-batch timbre encoding added, saved under diffusers' names and built as ours on load. `tiny`
builds it from small configs (`denoiser`); `acestep15` loads real weights from disk (`profiles`)."""

from __future__ import annotations

import contextvars
import importlib
import logging
import math
import threading
from dataclasses import dataclass

import torch
from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.pipeline_loading_utils import _fetch_class_library_tuple
from diffusers.utils.torch_utils import randn_tensor

from bayes_beats.model.codec import SpectrogramCodec
from bayes_beats.model.denoiser import SharedTimbreConditionEncoder, SketchGuidedTransformer
from bayes_beats.model.sketch import SKETCH_CHANNELS, sketch
from bayes_beats.model.text import embed, encode_lyrics, encode_text, format_prompt, load_text_encoder

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
