"""One training mode in its own process (for peak RSS): `python bench/train_probe.py cached|live STEPS`.
Prints {samples_per_s, peak_rss_mb} as JSON on the last line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(mode: str, steps: int) -> None:
    import datasets

    from bayes_beats.core.config import load_params
    from bayes_beats.model import conditioning
    from bayes_beats.model.codec import SpectrogramCodec
    from bayes_beats.model.denoiser import build_tiny_denoiser
    from bayes_beats.model.profiles import AudioEncoder
    from bayes_beats.model.text import load_text_encoder
    from bayes_beats.model.train import CachedClips, Denoiser, LiveClips, make_batch

    torch.set_num_threads(2)
    params = load_params()
    codec = SpectrogramCodec.from_pretrained("models/codec")
    if mode == "cached":
        clips = CachedClips("data/encoded/train.safetensors")
    else:  # the seed project's way: frozen codec and text encoder resident, everything encoded per step
        text_encoder, tokenizer = load_text_encoder()
        clips = LiveClips(
            datasets.load_from_disk("data/dataset")["train"],
            Path("data/dataset"),
            AudioEncoder(codec, params.sample.sample_rate),
            tokenizer,
            text_encoder,
            params,
        )
    frame_rate = conditioning.frame_rate(codec.config)
    denoiser = Denoiser(*build_tiny_denoiser(codec, params.model), frame_rate)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=1e-4)
    tp = params.pretrain

    def step(i: int) -> None:
        loss = denoiser(make_batch(clips, tp, i, 0, frame_rate, (0,), False))["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step(0)  # warm-up
    start = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "steps": steps,
                "batch_size": tp.batch_size,
                "samples_per_s": round(steps * tp.batch_size / seconds, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
