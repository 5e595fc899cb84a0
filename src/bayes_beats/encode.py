"""`encode` stage: what the frozen parts produce, computed once → data/encoded/{train,validation}.safetensors.

Codec latents of every clip, the frozen text encoder's token states for each caption variant (formatted
with the clip's measured metas, fixed padding), sentence embeddings of the bare captions, and the metas with what the training sketch is drawn from: each clip's
beat grid origin, per-beat chords and energy percentile.
Training reads these from disk, so the codec and MiniLM are never resident while training (the seed
project kept every frozen encoder in VRAM: 38 of 40 GB at batch 1)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from bayes_beats.core import paths
from bayes_beats.core.atomic import atomic_dir
from bayes_beats.core.config import Params
from bayes_beats.model.encoding import VARIANTS, encode_rows, energy_percentile, pad_chords
from bayes_beats.model.profiles import AudioEncoder, load_frozen
from bayes_beats.model.text import embed
from bayes_beats.music.moods import anchor_texts

log = logging.getLogger(__name__)
OUT_DIR = paths.ENCODED


def encode_split(
    split: datasets.Dataset, root: Path, codec: AudioEncoder, tokenizer, text_encoder, params: Params
) -> tuple[dict[str, torch.Tensor], dict]:
    parts = []
    for start in tqdm(range(0, len(split), params.encode.batch_size), desc="encode", unit="batch"):
        rows = split.select(range(start, min(start + params.encode.batch_size, len(split)))).to_list()
        parts.append(encode_rows(rows, root, codec, tokenizer, text_encoder, params))
    per_clip = (
        *("latents", "text_states", "text_mask", "embeddings"),
        *("bpm", "major", "origin", "energy_raw", "valence", "arousal"),
    )
    tensors = {k: torch.cat([p[k] for p in parts]).contiguous() for k in per_clip}
    tensors["chords"] = pad_chords([c for p in parts for c in p["chords"]])
    tensors |= {"lyric_states": parts[0]["lyric_states"], "lyric_mask": parts[0]["lyric_mask"]}
    index = {
        "keys": list(split["keys"]),
        "keyscale": [k for p in parts for k in p["keyscale"]],
        "variants": list(VARIANTS),
    }
    return tensors, index


def run(params: Params) -> None:
    torch.set_num_threads(2)
    codec, tokenizer, text_encoder = load_frozen(params)
    dd = datasets.load_from_disk(str(paths.DATASET))
    with atomic_dir(OUT_DIR) as tmp:
        reference = None  # energy is a percentile among the training clips
        for name in ("train", "validation"):
            tensors, index = encode_split(dd[name], paths.DATASET, codec, tokenizer, text_encoder, params)
            if reference is None:
                reference = np.sort(tensors["energy_raw"].numpy())
                texts, places = anchor_texts()  # what the planner reads a vibe against, in this text encoder
                tensors["anchor_embeddings"] = embed(tokenizer, text_encoder, texts).float().contiguous()
                tensors["anchor_va"] = torch.tensor(places, dtype=torch.float32)
            tensors["energy"] = torch.from_numpy(energy_percentile(tensors["energy_raw"].numpy(), reference)).float()
            save_file(tensors, tmp / f"{name}.safetensors")
            (tmp / f"{name}.json").write_text(json.dumps(index))
            log.info("encode: %s → %s", name, {k: tuple(v.shape) for k, v in tensors.items()})
