"""`pretrain` stage (tiny only): the tiny base trained from scratch on the corpus → models/base/.

The base learns music from style captions only (genre, instruments, texture — no mood words), with the
metas and the per-frame sketch; the vibe vocabulary is left for the LoRA in `finetune` to learn."""

from __future__ import annotations

import contextlib
import json
import logging

import torch

from bayes_beats.core import paths, tracking
from bayes_beats.core.atomic import atomic_dir, write_json
from bayes_beats.core.config import Params
from bayes_beats.model.codec import SpectrogramCodec
from bayes_beats.model.conditioning import frame_rate
from bayes_beats.model.denoiser import build_tiny_denoiser
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
            (tmp / "base.json").write_text(json.dumps({"checkpoint_dir": str(checkpoint.resolve())}))
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

    pipe = assemble(codec, transformer, condition_encoder)
    with atomic_dir(OUT_DIR) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    write_json(
        paths.PRETRAIN_METRICS,
        {"steps": params.pretrain.steps, "final_loss": history[-1]["loss"], "first_loss": history[0]["loss"]},
    )
    write_loss_csv(paths.PRETRAIN_LOSS, history)
    mlflow.log_metrics({"final_loss": history[-1]["loss"], "first_loss": history[0]["loss"]})
    mlflow.log_artifact(str(paths.PRETRAIN_LOSS))
    log.info("pretrain: loss %.4f → %.4f, base model in %s", history[0]["loss"], history[-1]["loss"], OUT_DIR)
