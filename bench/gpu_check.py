"""The tiny profile on a GPU, once per lent machine (docs/design.md, "On a GPU"):

    python bench/gpu_check.py train|generate WORKSPACE [STEPS] [OUT.json]

WORKSPACE holds what `dvc repro` made (models/codec, models/finetuned, data/encoded/train.safetensors).
On CUDA in bf16, as the GPU container runs: `train`, `pretrain`'s training loop from a fresh tiny base
(accelerate `mixed_precision="bf16"`); `generate`, 10-s clips at batch 1 and 8 from the fine-tuned model and
the radio's continuation segments of 8 streams batched. Two parts: each fits the device tool's 64 MiB. On a machine without CUDA it runs the same on the CPU in fp32
(a smoke run of this script, not a figure)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from serve_bench import PROMPTS  # noqa: E402  the benches' one prompt list


def synced() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def gib(n_bytes: int) -> float:
    return round(n_bytes / 2**30, 3)


def training(workspace: Path, steps: int, cuda: bool) -> dict:
    from bayes_beats.core.config import load_params
    from bayes_beats.model.codec import SpectrogramCodec
    from bayes_beats.model.conditioning import frame_rate
    from bayes_beats.model.denoiser import build_tiny_denoiser
    from bayes_beats.model.train import CachedClips, Denoiser, train

    params = load_params()
    run = params.pretrain.model_copy(
        update={"steps": steps, "mixed_precision": "bf16" if cuda else "no", "checkpointing_steps": steps}
    )
    torch.manual_seed(0)
    codec = SpectrogramCodec.from_pretrained(workspace / "models/codec")
    transformer, condition_encoder = build_tiny_denoiser(codec, params.model)
    denoiser = Denoiser(transformer, condition_encoder, frame_rate(codec.config))
    trainable = [p for p in denoiser.parameters() if p.requires_grad]
    clips = CachedClips(workspace / "data/encoded/train.safetensors")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as checkpoints:
        began = synced()
        history = train(denoiser, trainable, clips, run, Path(checkpoints), (0,), "pretrain")
        took = synced() - began
    return {
        "steps": steps,
        "batch_size": run.batch_size,
        "clips": clips.n,
        "steps_per_s": round(steps / took, 2),
        "loss_first": history[0]["loss"],
        "loss_last": history[-1]["loss"],
        "peak_gpu_gib": gib(torch.cuda.max_memory_allocated()) if cuda else None,
    }


def generation(generator, cuda: bool) -> dict:
    out = {}
    for batch, repeats in ((1, 5), (8, 3)):
        generator.generate_with_plans(PROMPTS[:batch], 10.0, list(range(batch)))  # warm: kernels, allocator
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times, waves = [], []
        for r in range(repeats):
            began = synced()
            audio, _ = generator.generate_with_plans(PROMPTS[:batch], 10.0, [r * batch + i for i in range(batch)])
            times.append(synced() - began)
            waves += [variations[0] for variations in audio]
        out[f"batch_{batch}"] = {
            "s_per_call": [round(t, 3) for t in times],
            "audio_s_per_s": round(10.0 * batch / float(np.median(times)), 1),
            "finite": bool(all(np.isfinite(w).all() for w in waves)),
            "peak_gpu_gib": gib(torch.cuda.max_memory_allocated()) if cuda else None,
        }
    return out


def streaming(generator, streams: int = 8, segments: int = 6) -> dict:
    from bayes_beats.core.config import load_params
    from bayes_beats.model.radio import Cursor, Radio

    radio = Radio(generator, load_params().stream)
    cursors = [Cursor(PROMPTS[i], i, 1.0) for i in range(streams)]
    began = synced()
    first = radio.render(cursors, [None] * streams)
    first_s = synced() - began
    cursors = [s.cursor for s in first]
    began, audio, finite = synced(), 0.0, True
    for _ in range(segments):
        rendered = radio.render(cursors, [None] * streams)
        audio += sum(s.duration_s for s in rendered)
        finite &= all(np.isfinite(np.asarray(s.audio)).all() for s in rendered)
        cursors = [s.cursor for s in rendered]
    took = synced() - began
    return {
        "streams": streams,
        "first_segments_s": round(first_s, 3),
        "audio_s": round(audio, 1),
        "audio_s_per_s": round(audio / took, 1),
        "finite": bool(finite),
    }


def main(part: str, workspace: Path, steps: int = 300) -> dict:
    from bayes_beats.model.generate import load_generator

    cuda = torch.cuda.is_available()
    out: dict = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "dtype": "bf16" if cuda else "fp32",
    }
    if part == "train":
        out["training"] = training(workspace, steps, cuda)
    else:
        generator = load_generator(workspace / "models/finetuned", device="cuda" if cuda else "cpu")
        out["generation"] = generation(generator, cuda)
        out["stream"] = streaming(generator)
    return out


if __name__ == "__main__":
    part, workspace = sys.argv[1], Path(sys.argv[2])
    result = main(part, workspace, int(sys.argv[3]) if len(sys.argv) > 3 else 300)
    text = json.dumps(result, indent=2)
    if len(sys.argv) > 4:
        Path(sys.argv[4]).write_text(text + "\n")
    print(text)
