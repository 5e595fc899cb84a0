"""`pretrain` stage: the tiny base trained from scratch on the corpus → models/base/ (acestep15: a pointer to
the checkpoint), with a model card recording the `model:` params it was made with.

The base learns music from style captions only (genre, instruments, texture — no mood words), with the
metas and the per-frame sketch; the vibe vocabulary is left for the LoRA in `finetune` to learn."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch

from bayes_beats.core import paths, tracking
from bayes_beats.core.atomic import atomic_dir, write_json
from bayes_beats.core.config import Params
from bayes_beats.model.codec import SpectrogramCodec
from bayes_beats.model.conditioning import frame_rate
from bayes_beats.model.denoiser import build_tiny_denoiser
from bayes_beats.model.generate import MODEL_CARD
from bayes_beats.model.pipeline import assemble
from bayes_beats.model.profiles import resolve_checkpoint
from bayes_beats.model.train import CachedClips, Denoiser, is_main_process, train, write_loss_csv

log = logging.getLogger(__name__)
OUT_DIR = paths.BASE
CHECKPOINTS = paths.PRETRAIN_CHECKPOINTS
CACHE = paths.TRAIN_CACHE


def run(params: Params) -> None:
    if params.model.profile != "tiny":  # real weights are the base: point at them, train nothing
        checkpoint = resolve_checkpoint(params.model)
        with atomic_dir(OUT_DIR) as tmp:
            (tmp / paths.BASE_POINTER).write_text(json.dumps({"checkpoint_dir": str(checkpoint.resolve())}))
            write_card(tmp, params, metrics={})
        log.info("pretrain: profile %s starts from %s", params.model.profile, checkpoint)
        return
    torch.set_num_threads(2)
    codec = SpectrogramCodec.from_pretrained(paths.CODEC)
    transformer, condition_encoder = build_tiny_denoiser(codec, params.model)
    # Text-to-music's timbre reference is always the same silence, so what the timbre encoder makes of it is
    # one vector per model: left at its seeded init (the Denoiser freezes it) it is a fixed key among the
    # encoder states, which the cross-attention learns around, and encoded once (conditioning.FrozenTimbre)
    # instead of trained through 30 s of reference every step: a fifth of a step here (docs/ablation.md).
    denoiser = Denoiser(transformer, condition_encoder, frame_rate(codec.config))
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    is_main = is_main_process()  # under DDP one process logs and writes the model
    with tracking.stage_run("pretrain", params) if is_main else contextlib.nullcontext():
        metric_log = tracking.MetricLogger()
        params_list = [p for p in denoiser.parameters() if p.requires_grad]
        history = train(
            denoiser, params_list, CachedClips(CACHE), params.pretrain, CHECKPOINTS, (0,), "pretrain", metric_log
        )
        if is_main:
            metric_log.flush(history)
            save(codec, transformer, condition_encoder, params, history)


def save(codec, transformer, condition_encoder, params: Params, history: list[dict]) -> None:
    import mlflow

    pipe = assemble(codec, transformer, condition_encoder, continues=params.pretrain.continuation > 0)
    metrics = {"steps": params.pretrain.steps, "final_loss": history[-1]["loss"], "first_loss": history[0]["loss"]}
    with atomic_dir(OUT_DIR) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        write_card(tmp, params, metrics)
    write_json(paths.PRETRAIN_METRICS, metrics)
    write_loss_csv(paths.PRETRAIN_LOSS, history)
    mlflow.log_metrics({"final_loss": history[-1]["loss"], "first_loss": history[0]["loss"]})
    mlflow.log_artifact(str(paths.PRETRAIN_LOSS))
    log.info("pretrain: loss %.4f → %.4f, base model in %s", history[0]["loss"], history[-1]["loss"], OUT_DIR)


def write_card(model_dir: Path, params: Params, metrics: dict) -> None:
    """The base's model card: the `model:` params it was made with (its limits and steps, which
    `load_generator` reads from here, not from whatever params.yaml is in the working directory then)."""
    card = {
        "profile": params.model.profile,
        "params": {"model": params.model.model_dump()},
        "metrics": metrics,
    }
    (model_dir / MODEL_CARD).write_text(json.dumps(card, indent=2))
