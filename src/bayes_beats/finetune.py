"""`finetune` stage: LoRA (peft) on the DiT plus the variational prompt layer and the planner, trained on
the vibe captions and measured metas → models/finetuned/ (base, LoRA adapter, heads, model_card.json).

Frozen: text encoder and codec (their outputs are read from data/encoded), the condition encoder and
the DiT's own weights. Trained: the LoRA matrices and the variational head. Fit (no gradient): the planner,
from the same cache (model/vibe.py)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from diffusers import AceStepConditionEncoder, AceStepTransformer1DModel
from peft import LoraConfig, get_peft_model_state_dict

from bayes_beats.core import paths, tracking
from bayes_beats.core.atomic import atomic_dir, write_json
from bayes_beats.core.config import Params
from bayes_beats.core.tracking import dataset_hash
from bayes_beats.model.conditioning import frame_rate
from bayes_beats.model.generate import MODEL_CARD
from bayes_beats.model.pipeline import VibePipeline
from bayes_beats.model.train import CachedClips, Denoiser, is_main_process, load_cache, train, write_loss_csv
from bayes_beats.model.vibe import VariationalPromptHead, VibePlanner
from bayes_beats.music.moods import mood_anchors

log = logging.getLogger(__name__)
OUT_DIR = paths.FINETUNED
CHECKPOINTS = paths.FINETUNE_CHECKPOINTS
CACHE = paths.TRAIN_CACHE
CAPTION_DESIGN = (
    "Base (pretrain): captions name genre, instruments and rhythmic texture only, e.g. 'lo-fi hip hop with "
    "piano and warm pad, steady rhythm', never a mood word; metas (bpm, key) and the per-frame sketch carry "
    "tempo and harmony. LoRA (finetune): vibe captions built from the mood tags and measured features "
    "('melancholic, sad, slow and dark-toned piano lo-fi hip hop in A minor at 68 BPM, lonely') and two "
    "paraphrases without numbers. The planner reads free text against mood anchors, calibrated on these "
    "captions, and plans tempo, mode and energy from regressions on the clips' measured metas."
)


def run(params: Params) -> None:
    torch.set_num_threads(2)
    fp = params.finetune
    torch.manual_seed(fp.seed)  # LoRA and head initialisation: the same on every (re)run
    base = paths.base_pipeline(paths.BASE)
    if base is None:
        raise FileNotFoundError(f"no base model in {paths.BASE}: run `pretrain` first")
    transformer = AceStepTransformer1DModel.from_pretrained(base, subfolder="transformer", local_files_only=True)
    condition_encoder = AceStepConditionEncoder.from_pretrained(
        base, subfolder="condition_encoder", local_files_only=True
    )
    transformer.requires_grad_(False)
    condition_encoder.requires_grad_(False)
    lora_config = LoraConfig(
        r=fp.lora_rank,
        lora_alpha=fp.lora_alpha,
        lora_dropout=fp.lora_dropout,
        target_modules=list(fp.target_modules),
        init_lora_weights=True,
    )
    transformer.add_adapter(lora_config)
    cache, index = load_cache(CACHE)
    prompt_head = VariationalPromptHead(embed_dim=cache["embeddings"].shape[-1], prior_std=fp.prior_std)
    planner = VibePlanner.fit(cache, index["keyscale"], params.sample.clip_seconds, anchor_words=tuple(mood_anchors()))
    del cache
    denoiser = Denoiser(
        transformer,
        condition_encoder,
        frame_rate(json.loads((base / "vae" / "config.json").read_text())),
        prompt_head,
        kl_weight=fp.kl_weight,
    )
    trainable = [p for p in transformer.parameters() if p.requires_grad] + list(prompt_head.parameters())
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    is_main = is_main_process()  # under DDP one process logs and writes the model
    with tracking.stage_run("finetune", params) if is_main else contextlib.nullcontext():
        metric_log = tracking.MetricLogger()
        history = train(denoiser, trainable, CachedClips(CACHE), fp, CHECKPOINTS, (1, 2, 3), "finetune", metric_log)
        if is_main:
            metric_log.flush(history)
            save(params, base, transformer, lora_config, prompt_head, planner, history)


def save(params: Params, base: Path, transformer, lora_config, prompt_head, planner, history: list[dict]) -> None:
    """models/finetuned/ (atomically), metrics, and the same as MLflow artifacts of the active run."""
    import mlflow

    fp = params.finetune
    metrics = {
        "steps": fp.steps,
        "first_loss": history[0]["loss"],
        "final_loss": history[-1]["loss"],
        "final_flow": history[-1]["flow"],
        "final_kl": history[-1]["kl"],
    }
    with atomic_dir(OUT_DIR) as tmp:
        if params.model.profile == "tiny":  # self-contained: the base travels with the adapter
            # without the base's card: the fine-tune's own, beside it, is the one that describes the model
            ignore = shutil.ignore_patterns(MODEL_CARD)
            shutil.copytree(base, tmp / "base", copy_function=_link_or_copy, ignore=ignore)
        else:  # a 4 GB checkpoint is referenced, not copied
            (tmp / paths.BASE_POINTER).write_text(json.dumps({"checkpoint_dir": str(base)}))
        VibePipeline.save_lora_weights(
            tmp / "lora",
            transformer_lora_layers=get_peft_model_state_dict(transformer),
            transformer_lora_adapter_metadata=lora_config.to_dict(),
        )
        prompt_head.save_pretrained(tmp / "prompt_head")
        planner.save_pretrained(tmp / "planner")
        card = {
            "name": paths.REGISTERED_MODEL,
            "profile": params.model.profile,
            "base": str(base),
            "dataset_md5": dataset_hash(),
            "caption_design": CAPTION_DESIGN,
            "params": {"model": params.model.model_dump(), "finetune": fp.model_dump()},
            "metrics": metrics,
        }
        (tmp / MODEL_CARD).write_text(json.dumps(card, indent=2))
    write_json(paths.FINETUNE_METRICS, metrics)
    write_loss_csv(paths.FINETUNE_LOSS, history)
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    for part in ("lora", "prompt_head", "planner"):
        mlflow.log_artifacts(str(OUT_DIR / part), artifact_path=part)
    mlflow.log_artifact(str(OUT_DIR / MODEL_CARD))
    mlflow.log_artifact(str(paths.FINETUNE_LOSS))
    log.info("finetune: %s, model in %s", metrics, OUT_DIR)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
