"""The Python API used by evaluation and serving: `load_generator(model_dir).generate(...)`."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch

from bayes_beats.core.config import ModelParams
from bayes_beats.model.pipeline import Plan, VibePipeline
from bayes_beats.model.sketch import DEFAULT_DEGREES, chords_of, transpose
from bayes_beats.music.theory import PITCH_CLASSES, metas_in_text, parse_keyscale

DEFAULT_BPM = 100.0  # a base model's tempo when the caller names none (it has no planner)


class ModelError(Exception):
    """A model directory that is missing, incomplete or unreadable."""


def _pick_device(name: str) -> tuple[str, torch.dtype]:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    return device, torch.bfloat16 if device.startswith("cuda") else torch.float32


def load_generator(model_dir: str | Path, device: str = "auto") -> Generator:
    """Load a base (`models/base`) or fine-tuned (`models/finetuned`) model directory."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model directory not found: {model_dir}")
    card = json.loads((model_dir / "model_card.json").read_text()) if (model_dir / "model_card.json").is_file() else {}
    if (model_dir / "base").is_dir():
        base = model_dir / "base"
    elif (model_dir / "base.json").is_file():
        base = Path(json.loads((model_dir / "base.json").read_text())["checkpoint_dir"])
    elif (model_dir / "model_index.json").is_file():
        base = model_dir
    else:
        raise ModelError(f"{model_dir} is not a model directory: no model_index.json, base/ or base.json")
    device, dtype = _pick_device(device)
    try:
        pipe = VibePipeline.from_pretrained(base, local_files_only=True, dtype=dtype)
        if (model_dir / "lora").is_dir():
            pipe.load_lora_weights(model_dir / "lora")
        if (model_dir / "prompt_head").is_dir():
            from bayes_beats.model.vibe import VariationalPromptHead, VibePlanner

            pipe.register_modules(
                prompt_head=VariationalPromptHead.from_pretrained(model_dir / "prompt_head"),
                planner=VibePlanner.from_pretrained(model_dir / "planner"),
            )
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot load the model in {model_dir}: {err}") from err
    pipe.set_progress_bar_config(disable=True)
    params = ModelParams.model_validate(card.get("params", {}).get("model", {}))
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
        self.sketch_guidance = float(self.card.get("params", {}).get("finetune", {}).get("sketch_guidance", 1.0))
        self.last_plans: list[dict] = []

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

    def plan(
        self,
        prompts: list[str],
        seeds: list[int],
        temperature: float,
        bpm: float | None = None,
        keyscale: str | None = None,
        energy: float | None = None,
    ) -> Plan:
        """Per item: the planner's metas, then what the prompt names outright ("in A minor at 120 BPM"),
        then the caller's overrides, each replacing the one before. Key and progression are drawn per
        (prompt, seed): the tonic carries no mood, so different prompts get different keys."""
        pipe, z = self.pipe, None
        rngs = [np.random.default_rng([s, zlib.crc32(p.encode())]) for s, p in zip(seeds, prompts, strict=True)]
        if pipe.planner is not None:
            embedding = pipe.embed(prompts)
            if pipe.prompt_head is not None:  # the variational sample conditions the DiT's text tokens
                eps = torch.stack(
                    [torch.randn(embedding.shape[1], generator=torch.Generator().manual_seed(s)) for s in seeds]
                )
                z = pipe.prompt_head(embedding.to(pipe.prompt_head.dtype), eps, temperature)[0].detach()
            planned = pipe.planner(embedding.to(pipe.planner.dtype))
            bpms = planned["bpm"].tolist()
            majors = (planned["p_major"] > 0.5).tolist()
            energies = planned["energy"].tolist()
        else:  # a base model has no planner: a neutral plan, mode by seed
            bpms = [DEFAULT_BPM] * len(prompts)
            majors = [bool(rng.random() < 0.5) for rng in rngs]
            energies = [0.5] * len(prompts)
        plan = Plan([], [], [], [], z)
        for i, (prompt, rng) in enumerate(zip(prompts, rngs, strict=True)):
            text_bpm, text_key = metas_in_text(prompt)
            tonic = int(rng.integers(12))
            key = keyscale or text_key or f"{PITCH_CLASSES[tonic]} {'major' if majors[i] else 'minor'}"
            tonic, mode = parse_keyscale(key)
            if pipe.planner is not None:
                chords = transpose(pipe.planner.progression(mode == "major", rng), tonic)
            else:
                chords = chords_of(DEFAULT_DEGREES, tonic, mode)
            tempo = bpm if bpm is not None else (text_bpm if text_bpm is not None else bpms[i])
            plan.bpm.append(float(np.clip(tempo, self.params.min_bpm, self.params.max_bpm)))
            plan.keyscale.append(key)
            plan.energy.append(float(energy if energy is not None else energies[i]))
            plan.chords.append(chords)
        return plan

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
        temperature: float = 1.0,
        bpm: float | None = None,
        keyscale: str | None = None,
        energy: float | None = None,
        output_type: str = "np",
    ) -> tuple[list[list[np.ndarray]], list[dict]]:
        """→ (audio, plans): audio[i][j] is prompt i, variation j, float32 [channels, samples] at
        `self.sample_rate`; plans[i * num_variations + j] is its {bpm, keyscale, energy}. `bpm`, `keyscale`
        and `energy` (a percentile of the corpus's, in [0, 1]) fix those metas for every item.

        All prompts and variations go through the pipeline as one batch; each item's randomness comes
        from (seed, variation) alone, so a request's audio does not depend on what it was batched with."""
        self._validate(prompts, duration_s, num_variations, temperature, bpm, keyscale, energy)
        per_prompt = seed if isinstance(seed, list) else [seed] * len(prompts)  # a list: one seed per prompt
        if len(per_prompt) != len(prompts):
            raise ValueError(f"got {len(per_prompt)} seeds for {len(prompts)} prompts")
        batch = [p for p in prompts for _ in range(num_variations)]
        seeds = [s * 1000 + j for s in per_prompt for j in range(num_variations)]
        plan = self.plan(batch, seeds, temperature, bpm, keyscale, energy)
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        out = self.pipe(
            prompt=batch,
            lyrics=["[instrumental]"] * len(batch),
            audio_duration=duration_s,
            num_inference_steps=self.params.num_inference_steps,
            guidance_scale=1.0,
            shift=self.params.shift,
            generator=generators,
            output_type="latent" if output_type == "latent" else "pt",
            plan=plan,
            sketch_guidance=self.sketch_guidance,
        ).audios
        arrays = [a.float().cpu().numpy() for a in out]
        audio = [arrays[i * num_variations : (i + 1) * num_variations] for i in range(len(prompts))]
        return audio, plan.metas()
