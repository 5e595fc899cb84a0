"""`pretrain` stage (tiny only): the tiny base trained from scratch on the corpus → models/base/.

The base learns music from style captions only (genre, instruments, texture — no mood words), with the
metas and the per-frame sketch; the vibe vocabulary is left for the LoRA in `finetune` to learn."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch

from bayes_beats import tracking
from bayes_beats.atomic import atomic_dir, write_json
from bayes_beats.codec import SpectrogramCodec
from bayes_beats.config import Params
from bayes_beats.model import assemble, build_tiny_denoiser, resolve_checkpoint
from bayes_beats.train import CachedClips, Denoiser, is_main_process, train

log = logging.getLogger(__name__)
OUT_DIR = Path("models/base")
CHECKPOINTS = Path("checkpoints/pretrain")
CACHE = Path("data/encoded/train.safetensors")


def run(params: Params) -> None:
    if params.model.profile != "tiny":  # real weights are the base: point at them, train nothing
        checkpoint = resolve_checkpoint(params.model)
        with atomic_dir(OUT_DIR) as tmp:
            (tmp / "base.json").write_text(json.dumps({"checkpoint_dir": str(checkpoint.resolve())}))
        log.info("pretrain: profile %s starts from %s", params.model.profile, checkpoint)
        return
    torch.set_num_threads(2)
    codec = SpectrogramCodec.from_pretrained("models/codec")
    transformer, condition_encoder = build_tiny_denoiser(codec, params.model)
    frame_rate = codec.config.sampling_rate / codec.hop_length
    denoiser = Denoiser(transformer, condition_encoder, frame_rate)
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    is_main = is_main_process()  # under DDP one process logs and writes the model
    with tracking.stage_run("pretrain", params) if is_main else contextlib.nullcontext():
        metric_log = tracking.MetricLogger()
        params_list = list(denoiser.parameters())
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
        "metrics/pretrain.json",
        {"steps": params.pretrain.steps, "final_loss": history[-1]["loss"], "first_loss": history[0]["loss"]},
    )
    write_loss_csv("metrics/pretrain_loss.csv", history)
    mlflow.log_metrics({"final_loss": history[-1]["loss"], "first_loss": history[0]["loss"]})
    mlflow.log_artifact("metrics/pretrain_loss.csv")
    log.info("pretrain: loss %.4f → %.4f, base model in %s", history[0]["loss"], history[-1]["loss"], OUT_DIR)


def write_loss_csv(path: str, history: list[dict]) -> None:
    from bayes_beats.atomic import write_text

    keys = list(history[-1])
    write_text(
        path,
        "\n".join([",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in history]) + "\n",
    )
