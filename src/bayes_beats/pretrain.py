"""`pretrain` stage (tiny only): the tiny base trained from scratch on the corpus → models/base/.

The base learns music from style captions only (genre, instruments, texture — no mood words), with the
metas and the per-frame sketch; the vibe vocabulary is left for the LoRA in `finetune` to learn."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from accelerate import PartialState

from bayes_beats.atomic import atomic_dir, write_json
from bayes_beats.codec import SpectrogramCodec
from bayes_beats.config import Params
from bayes_beats.model import assemble, build_tiny_denoiser, resolve_checkpoint
from bayes_beats.train import CachedClips, Denoiser, train

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
    history = train(
        denoiser,
        list(denoiser.parameters()),
        CachedClips(CACHE),
        params.pretrain,
        CHECKPOINTS,
        variants=(0,),
        desc="pretrain",
    )
    if not PartialState().is_main_process:  # under DDP one process writes the model
        return
    pipe = assemble(codec, transformer, condition_encoder)
    with atomic_dir(OUT_DIR) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    write_json(
        "metrics/pretrain.json",
        {"steps": params.pretrain.steps, "final_loss": history[-1]["loss"], "first_loss": history[0]["loss"]},
    )
    write_loss_csv("metrics/pretrain_loss.csv", history)
    log.info("pretrain: loss %.4f → %.4f, base model in %s", history[0]["loss"], history[-1]["loss"], OUT_DIR)


def write_loss_csv(path: str, history: list[dict]) -> None:
    from bayes_beats.atomic import write_text

    keys = list(history[-1])
    write_text(
        path,
        "\n".join([",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in history]) + "\n",
    )
