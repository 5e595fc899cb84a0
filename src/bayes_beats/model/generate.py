"""The Python API used by evaluation and serving: `load_generator(model_dir).generate(...)`."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch

from bayes_beats.core import paths
from bayes_beats.core.config import FinetuneParams, ModelParams, load_params
from bayes_beats.model.pipeline import Plan, VibePipeline
from bayes_beats.model.plans import DEFAULT_TEMPERATURE, FEATURES, PlanDistribution
from bayes_beats.model.sketch import DEFAULT_DEGREES, chords_of, transpose
from bayes_beats.music.theory import PITCH_CLASSES, metas_in_text, parse_keyscale

DEFAULT_BPM = 100.0  # a base model's tempo when the caller names none (it has no planner)
MODEL_CARD = "model_card.json"  # beside a stage's model: the params it was made with, its metrics
# model.* keys that cards of registered models carry but ModelParams does not (the device and dtype are
# picked at load, not recorded): dropped when a card is read, so extra="forbid" does not turn them away
RETIRED_MODEL_KEYS = ("device", "dtype")


def take_seeds(seeds: list[int], num_variations: int) -> list[int]:
    """Each take's seed (prompt i's takes are items i * num_variations + j): its noise and its key and
    progression draw come from it alone, so a take does not depend on what it was batched with."""
    return [s * 1000 + j for s in seeds for j in range(num_variations)]


class ModelError(Exception):
    """A model directory that is missing, incomplete or unreadable."""


def _pick_device(name: str) -> tuple[str, torch.dtype]:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    return device, torch.bfloat16 if device.startswith("cuda") else torch.float32


def read_card(model_dir: Path) -> dict:
    """A model directory's card, {} where it has none; its `params.model` without RETIRED_MODEL_KEYS."""
    path = Path(model_dir) / MODEL_CARD
    if not path.is_file():
        return {}
    card = json.loads(path.read_text())
    recorded = card.get("params", {}).get("model")
    if recorded:
        for key in RETIRED_MODEL_KEYS:
            recorded.pop(key, None)
    return card


def load_generator(model_dir: str | Path, device: str = "auto") -> Generator:
    """Load a base (`models/base`) or fine-tuned (`models/finetuned`) model directory."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model directory not found: {model_dir}")
    base = paths.base_pipeline(model_dir)
    if base is None:
        raise ModelError(f"{model_dir} is not a model directory: no model_index.json, base/ or {paths.BASE_POINTER}")
    device, dtype = _pick_device(device)
    try:
        card = read_card(model_dir)
        # the card records the limits and steps the model was made with; a directory without one (a bare
        # saved pipeline, or a base from a `pretrain` that wrote no card) has no record of its own: it runs
        # on the workspace's params.yaml
        recorded = card.get("params", {}).get("model")
        params = ModelParams.model_validate(recorded) if recorded else load_params().model
        pipe = VibePipeline.from_pretrained(base, local_files_only=True, dtype=dtype)
        if (model_dir / "lora").is_dir():
            pipe.load_lora_weights(model_dir / "lora")
            # inference never switches the adapter off: fold it into the DiT's weights, then drop peft's
            # layers (unfused, each adapted linear ran three matmuls: a third of the DiT's time on 2 cores)
            pipe.fuse_lora()
            pipe.unload_lora_weights()
        if (model_dir / "prompt_head").is_dir():
            from bayes_beats.model.vibe import VariationalPromptHead, VibePlanner

            pipe.register_modules(
                prompt_head=VariationalPromptHead.from_pretrained(model_dir / "prompt_head"),
                planner=VibePlanner.from_pretrained(model_dir / "planner"),
            )
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot load the model in {model_dir}: {err}") from err
    pipe.set_progress_bar_config(disable=True)
    if params.cpu_offload and device.startswith("cuda"):
        pipe.enable_model_cpu_offload()  # components visit the GPU one at a time: for small cards
    else:
        pipe.to(device)
    return Generator(pipe, params, card)


class Generator:
    def __init__(self, pipe: VibePipeline, params: ModelParams, card: dict | None = None) -> None:
        self.pipe, self.params, self.card = pipe, params, card or {}
        self.sample_rate = pipe.sample_rate
        # the model's own guidance on the sketch (a fine-tune's card records it; a base has none: off)
        finetune = self.card.get("params", {}).get("finetune")
        self.guidance = FinetuneParams.model_validate(finetune).guidance() if finetune else {}
        self.last_plans: list[dict] = []

    def guidance_for(self, bpms: list[float]) -> dict:
        """The DiT's guidance keys for one call: beat guidance only on the items planned slow enough for
        double time to be what a listener hears (at fast tempi it only cost CLAP; docs/ablation.md)."""
        guidance = dict(self.guidance)
        below = guidance.pop("beat_guidance_below_bpm", None)
        if below is not None and guidance.get("beat_guidance"):
            guidance["beat_guidance"] = [guidance["beat_guidance"] * (b < below) for b in bpms]
        return guidance

    def _validate(
        self,
        prompts: list[str],
        duration_s: float,
        num_variations: int,
        temperature: float,
        bpm: float | None,
        keyscale: str | None,
        energy: float | None,
    ) -> None:
        if not prompts or not isinstance(prompts, list):
            raise ValueError("prompts must be a non-empty list of strings")
        for prompt in prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError("every prompt must be a non-empty string")
            if len(prompt) > self.params.max_prompt_chars:
                raise ValueError(f"prompt longer than {self.params.max_prompt_chars} characters ({len(prompt)})")
        if not self.params.min_seconds <= duration_s <= self.params.max_seconds:
            raise ValueError(
                f"duration_s must be within [{self.params.min_seconds}, {self.params.max_seconds}] "
                f"for the {self.params.profile} profile, got {duration_s}"
            )
        p = self.params  # the limits are the profile's (params.yaml `model:`, recorded in the model card)
        if not 1 <= num_variations <= p.max_variations:
            raise ValueError(f"num_variations must be within [1, {p.max_variations}], got {num_variations}")
        if not 0 <= temperature <= p.max_temperature:
            raise ValueError(f"temperature must be within [0, {p.max_temperature}], got {temperature}")
        if bpm is not None and not p.min_bpm <= bpm <= p.max_bpm:
            raise ValueError(f"bpm must be within [{p.min_bpm}, {p.max_bpm}], got {bpm}")
        if keyscale is not None:
            parse_keyscale(keyscale)
        if energy is not None and not 0 <= energy <= 1:
            raise ValueError(f"energy must be within [0, 1] (a percentile of the corpus's energy), got {energy}")

    def distributions(self, prompts: list[str], embedding: torch.Tensor | None = None) -> list[PlanDistribution] | None:
        """Each vibe's plan as a distribution (None for a base model: it has no planner)."""
        if self.pipe.planner is None:
            return None
        embedding = self.pipe.embed(prompts) if embedding is None else embedding
        return self.pipe.planner.distributions(embedding.to(self.pipe.planner.dtype))

    def plan(
        self,
        prompts: list[str],
        seeds: list[int],
        temperature: float,
        num_variations: int = 1,
        bpm: float | None = None,
        keyscale: str | None = None,
        energy: float | None = None,
        taste: list[float] | None = None,
        embedding: torch.Tensor | None = None,
    ) -> tuple[Plan, list[dict]]:
        """The plan of every take (prompt i's takes are items i * num_variations + j; `seeds` per prompt) and
        what each drew: {bpm, keyscale, energy, features, plan}. A prompt's takes are stratified draws of its
        plan distribution, tilted by `taste` (a listener's posterior draw) when given; temperature 0 plays
        the mode. What the prompt names outright ("in A minor at 120 BPM"), then the caller's overrides,
        replace the draw. Key and progression are drawn per (prompt, seed): the tonic carries no mood."""
        pipe, z = self.pipe, None
        takes = take_seeds(seeds, num_variations)
        if embedding is None and pipe.planner is not None:  # a caller that has the prompts' embeddings passes them
            embedding = pipe.embed(prompts)
        dists = self.distributions(prompts, embedding)
        if embedding is not None and pipe.prompt_head is not None:
            # the prompt head's mean conditions the DiT's text tokens; the variations are the plan's draws,
            # not its samples (those are less diverse than seeds alone and cost alignment: docs/design.md)
            rows = embedding.repeat_interleave(num_variations, dim=0).to(pipe.prompt_head.dtype)
            z = pipe.prompt_head(rows)[0].detach()
        plan, drawn = Plan([], [], [], [], z), []
        for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
            text_bpm, text_key = metas_in_text(prompt)
            dist = dists[i] if dists is not None else None
            tilted = dist.tilt(np.asarray(taste)) if dist is not None and taste is not None else dist
            if tilted is not None:
                draws = tilted.draws(
                    num_variations, temperature, np.random.default_rng([seed, zlib.crc32(prompt.encode())])
                )
            for j in range(num_variations):
                rng = np.random.default_rng([takes[i * num_variations + j], zlib.crc32(prompt.encode())])
                tonic = int(rng.integers(12))
                if tilted is not None:
                    tempo, major, level = draws[j]
                else:  # a base model: a neutral plan, mode by seed
                    tempo, major, level = DEFAULT_BPM, bool(rng.random() < 0.5), 0.5
                key = keyscale or text_key or f"{PITCH_CLASSES[tonic]} {'major' if major else 'minor'}"
                tonic, mode = parse_keyscale(key)
                if pipe.planner is not None:
                    chords = transpose(pipe.planner.progression(mode == "major", rng), tonic)
                else:
                    chords = chords_of(DEFAULT_DEGREES, tonic, mode)
                tempo = bpm if bpm is not None else (text_bpm if text_bpm is not None else tempo)
                tempo = float(np.clip(tempo, self.params.min_bpm, self.params.max_bpm))
                level = float(energy if energy is not None else level)
                plan.bpm.append(tempo)
                plan.keyscale.append(key)
                plan.energy.append(level)
                plan.chords.append(chords)
                drawn.append(
                    {
                        "bpm": round(tempo, 2),
                        "keyscale": key,
                        "energy": round(level, 3),
                        # where the take sits in the vibe's own (untilted) plan: what a vote on it teaches
                        "features": [round(float(f), 4) for f in dist.features(tempo, mode == "major", level)]
                        if dist is not None
                        else None,
                        "plan": tilted.summary() if tilted is not None else None,
                    }
                )
        return plan, drawn

    def generate(
        self, prompts: list[str], duration_s: float, seed: int | list[int], **options
    ) -> list[list[np.ndarray]]:
        """→ result[i][j]: prompt i, variation j, float32 [channels, samples] at `self.sample_rate`; options
        as `generate_with_plans`. `last_plans` then holds what was rendered; callers that share a generator
        across threads use `generate_with_plans`, which returns the plans with the audio instead."""
        audio, self.last_plans = self.generate_with_plans(prompts, duration_s, seed, **options)
        return audio

    @torch.no_grad()
    def generate_with_plans(
        self,
        prompts: list[str],
        duration_s: float,
        seed: int | list[int],
        num_variations: int = 1,
        temperature: float = DEFAULT_TEMPERATURE,
        bpm: float | None = None,
        keyscale: str | None = None,
        energy: float | None = None,
        taste: list[float] | None = None,
        output_type: str = "np",
    ) -> tuple[list[list[np.ndarray]], list[dict]]:
        """→ (audio, plans): audio[i][j] is prompt i, variation j, float32 [channels, samples] at
        `self.sample_rate`; plans[i * num_variations + j] is what it drew (`plan`). `bpm`, `keyscale` and
        `energy` (a percentile of the corpus's, in [0, 1]) fix those metas for every item; `taste` (a draw of
        a listener's posterior, in plans.FEATURES order) tilts every prompt's plan.

        All prompts and variations go through the pipeline as one batch; each item's randomness comes
        from (seed, variation) alone, so a request's audio does not depend on what it was batched with."""
        self._validate(prompts, duration_s, num_variations, temperature, bpm, keyscale, energy)
        per_prompt = seed if isinstance(seed, list) else [seed] * len(prompts)  # a list: one seed per prompt
        if len(per_prompt) != len(prompts):
            raise ValueError(f"got {len(per_prompt)} seeds for {len(prompts)} prompts")
        if taste is not None and len(taste) != len(FEATURES):
            raise ValueError(f"taste has one weight per feature {FEATURES}, got {len(taste)}")
        batch = [p for p in prompts for _ in range(num_variations)]
        plan, drawn = self.plan(prompts, per_prompt, temperature, num_variations, bpm, keyscale, energy, taste)
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in take_seeds(per_prompt, num_variations)]
        out = self.pipe(
            prompt=batch,
            audio_duration=duration_s,
            num_inference_steps=self.params.num_inference_steps,
            shift=self.params.shift,
            generator=generators,
            output_type="latent" if output_type == "latent" else "pt",
            plan=plan,
            guidance=self.guidance_for(plan.bpm),
        ).audios
        arrays = [a.float().cpu().numpy() for a in out]
        audio = [arrays[i * num_variations : (i + 1) * num_variations] for i in range(len(prompts))]
        return audio, drawn
