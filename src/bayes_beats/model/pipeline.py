"""One generator, two scales. `VibePipeline` holds ACE-Step's components (diffusers' own DiT and condition
encoder) plus the variational prompt head and the planner, and samples text-to-music with the plan as a
plain argument of the call: each item's metas in its prompt, its sketch in the source latents, both built
by `conditioning.condition`, the function training conditions the DiT with. `tiny` builds it from small
configs (`denoiser`); `acestep15` loads real weights from disk (`profiles`).

Why its own sampler and not diffusers' `AceStepPipeline.__call__` (docs/design.md, "Sampler, conditioning
and continuation"): that call reads its prompt metas and source latents through hooks that see one bpm
per call and no plan, and runs the timbre encoder per item; the loop it runs is the dozen lines below."""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import torch
from diffusers import AceStepPipeline, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.loaders import AceStepLoraLoaderMixin
from diffusers.pipelines.pipeline_utils import AudioPipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from bayes_beats.model.codec import SpectrogramCodec
from bayes_beats.model.conditioning import FrozenTimbre, Sketch, condition, frame_rate, given, without_sketch
from bayes_beats.model.diffusers_adapter import timestep_schedule
from bayes_beats.model.sketch import double_time
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
    origin: list[float] | None = None  # per item, a strong beat's time (s, ≤ 0); None: at the first frame
    bpm_before: list[float | None] | None = None  # per item, the tempo before the origin (a stream's tail)

    def metas(self) -> list[dict]:
        """What each item was asked to be: {bpm, keyscale, energy}."""
        return [
            {"bpm": round(b, 2), "keyscale": k, "energy": round(e, 3)}
            for b, k, e in zip(self.bpm, self.keyscale, self.energy, strict=True)
        ]

    def sketch(self) -> Sketch:
        return Sketch(self.bpm, self.chords, self.energy, self.origin, self.bpm_before)


class VibePipeline(DiffusionPipeline, AceStepLoraLoaderMixin):
    model_cpu_offload_seq = AceStepPipeline.model_cpu_offload_seq  # components visit the GPU in this order
    _optional_components = ["audio_tokenizer", "audio_token_detokenizer", "prompt_head", "planner"]

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        transformer,
        condition_encoder,
        scheduler,
        audio_tokenizer=None,  # ACE-Step's cover task; held so its checkpoints load and save as they are
        audio_token_detokenizer=None,
        prompt_head=None,
        planner=None,
        continues: bool = False,  # trained to continue a given tail (pretrain's `continuation`): see __call__
    ):
        super().__init__()
        self.register_to_config(continues=continues)  # model_index.json: a saved model says how it was trained
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
            condition_encoder=condition_encoder,
            scheduler=scheduler,
            audio_tokenizer=audio_tokenizer,
            audio_token_detokenizer=audio_token_detokenizer,
            prompt_head=prompt_head,
            planner=planner,
        )
        self.sample_rate = int(vae.config.sampling_rate)
        self.latents_per_second = frame_rate(vae.config)
        self.timbre = FrozenTimbre()

    @classmethod
    def load_config(cls, *args, **kwargs):
        """model_index.json as saved, each of this package's components pointed at its defining module.

        diffusers imports the library an entry names and finds the class there. Saved models name this
        package's classes by the package (`["bayes_beats", ...]`, as `register_modules` saves them) or, in
        registered models and the run in dvc.lock, by a module that does not define them
        (`["bayes_beats.codec", "SpectrogramCodec"]`): neither loads as is, so any entry of this package
        naming a class the package exports is pointed at the module that defines it."""
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
        """As diffusers', with this package's components named in model_index.json by the package, which
        re-exports them (`["bayes_beats", "SpectrogramCodec"]`), not by the module that defines them today:
        a module may move, the export stays."""
        super().register_modules(**kwargs)
        root = importlib.import_module(PACKAGE)
        for name in kwargs:
            library, class_name = self.config[name]
            if library is not None and library.startswith(f"{PACKAGE}.") and hasattr(root, class_name):
                self.register_to_config(**{name: (PACKAGE, class_name)})

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Sentence embeddings of bare vibe texts (the planner's input)."""
        return embed(self.tokenizer, self.text_encoder, texts)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        audio_duration: float,
        num_inference_steps: int,
        shift: float,
        generator: torch.Generator | list[torch.Generator] | None = None,
        plan: Plan | None = None,
        guidance: dict | None = None,
        bpm: float | None = None,
        keyscale: str | None = None,
        latents: torch.Tensor | None = None,
        held_latents: torch.Tensor | None = None,
        held_frames: list[int] | None = None,
        output_type: str = "pt",
    ) -> AudioPipelineOutput:
        """Text-to-music, as diffusers' AceStepPipeline samples it with guidance_scale 1 (turbo), plus:

        plan: per-item metas (bpm, keyscale) and the variational sample the prompts are encoded with, and the
            sketch the source latents carry. None: `bpm`/`keyscale` for every item, no sketch.
        guidance: guidance on the sketch, with a plan ({sketch_guidance, beat_guidance,
            beat_guidance_above_t}; None: off), see `guided_velocity`.
        held_latents, held_frames: continuation ([batch, frames, channels] and, per item, how many leading
            frames are given): those frames are the previous segment's tail, given clean in the context
            (ACE-Step's repaint source, chunk mask 0) by a model trained to continue (`continues`), and held at each step at the current noise level
            (x_t = t·noise + (1 − t)·tail, training's interpolation), so the rest is denoised against them;
            an item with 0 held frames is plain text-to-music (docs/design.md, "The stream").
        output_type: "latent" ([batch, frames, channels]), "pt" or "np" (audio [batch, channels, samples])."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch, device, dtype = len(prompts), self._execution_device, self.transformer.dtype
        frames = math.ceil(audio_duration * self.latents_per_second)
        bpms, keys = (plan.bpm, plan.keyscale) if plan else ([bpm] * batch, [keyscale] * batch)

        # 1. the conditioning, as training builds it (computed where the condition encoder is: under model
        #    CPU offload its hook does not run, so it stays on the CPU)
        texts = [format_prompt(p, b, k, audio_duration) for p, b, k in zip(prompts, bpms, keys, strict=True)]
        text_states, text_mask = encode_text(self.tokenizer, self.text_encoder, texts, device)
        if self.prompt_head is not None and plan is not None and plan.z is not None:
            text_states = self.prompt_head.condition(text_states, plan.z.to(device))
        lyric_states, lyric_mask = encode_lyrics(self.tokenizer, self.text_encoder, batch, device)
        where = self.condition_encoder.device
        held = None  # a continuation: the tail given in the context, where pretrain trained it so
        if self.config.continues and held_latents is not None and held_frames is not None and any(held_frames):
            held = (held_latents.to(where), torch.as_tensor(held_frames, device=where))
        states, context = condition(
            self.condition_encoder,
            self.timbre(self.condition_encoder, self.latents_per_second, where, dtype),
            *(t.to(where) for t in (text_states, text_mask, lyric_states, lyric_mask)),
            frames=frames,
            rate=self.latents_per_second,
            drawn=plan.sketch() if plan else None,
            dtype=dtype,
            held=held,
        )
        states, context = states.to(device), context.to(device)

        # 2. the flow-matching ODE from noise (t = 1) to data (t = 0), one Euler step per timestep; a
        #    scheduler per call, so concurrent calls on one pipeline share no step index
        if latents is None:
            shape = (batch, frames, self.transformer.config.audio_acoustic_hidden_dim)
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        xt = latents.to(device=device, dtype=dtype)
        hold = None
        if held_latents is not None and held_frames is not None and any(held_frames):
            hold = (
                given(held_frames, frames, device),
                xt.clone(),
                held_latents[:, :frames].to(device=device, dtype=dtype),
            )
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(sigmas=timestep_schedule(num_inference_steps, shift, device).tolist(), device=device)
        with self.progress_bar(total=len(scheduler.timesteps)) as progress:
            for t in scheduler.timesteps:
                if hold is not None:  # the tail at this step's noise level (t is the sigma: one train timestep)
                    mask, noise, tail = hold
                    xt = torch.where(mask, float(t) * noise + (1 - float(t)) * tail, xt)
                now = float(t) * torch.ones((batch,), device=device, dtype=dtype)
                v = guided_velocity(self.transformer, xt, now, states, context, guidance if plan else None)
                xt = scheduler.step(v, t, xt, return_dict=False)[0]
                progress.update()
        if hold is not None:
            xt = torch.where(hold[0], hold[2], xt)  # the tail exactly as it was played
        if output_type == "latent":
            return AudioPipelineOutput(audios=xt)

        # 3. decode, peak-normalised to -1 dBFS as ACE-Step's own pipeline does
        audio = self.vae.decode(xt.transpose(1, 2)).sample.float()
        peak = audio.abs().amax(dim=[1, 2], keepdim=True)
        if torch.any(peak > 1.0):
            audio = audio / peak.clamp(min=1.0)
        peak = audio.abs().amax(dim=[1, 2], keepdim=True).clamp(min=1e-6)
        audio = audio * (10.0 ** (-1.0 / 20.0) / peak)
        self.maybe_free_model_hooks()
        return AudioPipelineOutput(audios=audio.cpu().numpy() if output_type == "np" else audio)


def guided_velocity(
    transformer,
    xt: torch.Tensor,
    t: torch.Tensor,
    states: torch.Tensor,
    context: torch.Tensor,
    guidance: dict | None,
) -> torch.Tensor:
    """The DiT's velocity, with classifier-free guidance on the sketch when asked.

    sketch_guidance g != 1: v_u + g (v_sketch − v_u), v_u with the sketch channels zeroed (as sketch dropout
    trains). beat_guidance h > 0 (a scale or one per item): + h (v_sketch − v_double) while t is above
    beat_guidance_above_t, v_double rendering the same sketch at double time, so the sum steers away from
    it; only the first, noisiest steps, where the rhythm forms (all steps cost key and mode, docs/
    ablation.md). The branches run as one DiT call on a stacked batch."""
    guidance = guidance or {}
    scale = guidance.get("sketch_guidance", 1.0)
    weights = torch.as_tensor(guidance.get("beat_guidance", 0.0), dtype=xt.dtype)  # scalar or per item
    early = bool((t > guidance.get("beat_guidance_above_t", 1.0)).all())  # the steps share one t
    beat = weights.to(xt.device).reshape(-1, 1, 1) if early and bool((weights != 0).any()) else None
    if scale == 1.0 and beat is None:
        return transformer(
            hidden_states=xt, timestep=t, timestep_r=t, encoder_hidden_states=states, context_latents=context
        ).sample
    branches = [context, without_sketch(context)] + ([double_time(context)] if beat is not None else [])
    n = len(branches)
    out = transformer(
        hidden_states=xt.repeat(n, 1, 1),
        timestep=t.repeat(n),
        timestep_r=t.repeat(n),
        encoder_hidden_states=states.repeat(n, 1, 1),
        context_latents=torch.cat(branches),
    ).sample
    v_sketch, v_uncond, *v_double = out.chunk(n)
    guided = v_uncond + scale * (v_sketch - v_uncond)
    return guided + beat * (v_sketch - v_double[0]) if v_double else guided


def assemble(
    codec: SpectrogramCodec, transformer, condition_encoder, prompt_head=None, planner=None, continues: bool = False
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
        continues=continues,
    )
