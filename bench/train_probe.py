"""One training mode in its own process (for peak RSS): `python bench/train_probe.py cached|live STEPS`.
Prints {samples_per_s, peak_rss_mb} as JSON on the last line.

`live` is what the `encode` cache saves: the same batches, encoded on the fly with the frozen codec and
text encoder resident (`LiveClips`; tests/test_train.py checks both give the same numbers)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


class LiveClips:
    """The training examples `CachedClips` reads from the cache, encoded per step instead (what `make_batch`
    takes from a clip source: n, frames, take)."""

    def __init__(self, root: Path, codec, params) -> None:
        """The training split of the dataset at `root`, encoded with `codec` and the tiny text encoder."""
        import datasets

        from bayes_beats.model.encoding import encode_rows, energy_percentile, energy_raw, pad_chords
        from bayes_beats.model.profiles import AudioEncoder
        from bayes_beats.model.text import load_text_encoder

        split = datasets.load_from_disk(str(root))["train"]
        audio_encoder, (text_encoder, tokenizer) = AudioEncoder(codec, params.sample.sample_rate), load_text_encoder()
        # as `encode` ranks the training split's clips: float32 like its tensors, so ties fall the same way
        reference = np.sort(energy_raw(split.to_list()).astype(np.float32))

        def encode(rows: list[dict]) -> dict:
            out = encode_rows(rows, root, audio_encoder, tokenizer, text_encoder, params)
            energy = energy_percentile(out["energy_raw"].numpy(), reference)
            return out | {"chords": pad_chords(out["chords"]), "energy": torch.from_numpy(energy).float()}

        self.encode = encode
        self.split = split
        self.n = len(split)
        self.frames = self.encode([split[0]])["latents"].shape[1]

    def take(self, idx: torch.Tensor) -> dict:
        return self.encode([self.split[int(i)] for i in idx])


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(mode: str, steps: int) -> None:
    from bayes_beats.core import paths
    from bayes_beats.core.config import load_params
    from bayes_beats.model import conditioning
    from bayes_beats.model.codec import SpectrogramCodec
    from bayes_beats.model.denoiser import build_tiny_denoiser
    from bayes_beats.model.train import CachedClips, Denoiser, make_batch

    torch.set_num_threads(2)
    params = load_params()
    codec = SpectrogramCodec.from_pretrained(paths.CODEC)
    # live: frozen codec and text encoder resident, everything encoded per step
    clips = CachedClips(paths.TRAIN_CACHE) if mode == "cached" else LiveClips(paths.DATASET, codec, params)
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
