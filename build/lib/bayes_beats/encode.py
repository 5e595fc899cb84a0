"""`encode` stage: what the frozen parts produce, computed once → data/encoded/{train,validation}.safetensors.

Codec latents of every clip, the frozen text encoder's token states for each caption variant (formatted
with the clip's measured metas, fixed padding), sentence embeddings of the bare captions, and the metas.
Training reads these from disk, so the codec and MiniLM are never resident while training (the seed
project kept every frozen encoder in VRAM: 38 of 40 GB at batch 1)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import librosa
import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from bayes_beats.atomic import atomic_dir
from bayes_beats.audio import load_audio
from bayes_beats.config import Params
from bayes_beats.model import AudioEncoder, embed, encode_lyrics, encode_text, format_prompt, load_frozen
from bayes_beats.sketch import parse_keyscale

log = logging.getLogger(__name__)
OUT_DIR = Path("data/encoded")
# caption variants: 0 = style only (the base's captions), 1.. = vibe captions (the LoRA's)
VARIANTS = ("style", "caption", "simplified", "descriptive")


def variant_texts(row: dict) -> list[str]:
    return [
        row["style_prompt"],
        row["prompt"],
        row["recaption"]["simplified"],
        row["recaption"]["descriptive"],
    ]


def beat_phase(audio: np.ndarray, sr: int, bpm: float) -> float:
    """Time of the first tracked beat: aligns the training sketch's grid with the clip's own beats."""
    _, beats = librosa.beat.beat_track(y=audio, sr=sr, bpm=bpm, units="time")
    return float(beats[0] % (60.0 / bpm)) if len(beats) else 0.0


def encode_rows(rows: list[dict], root: Path, codec: AudioEncoder, tokenizer, text_encoder, params: Params) -> dict:
    """What the frozen models make of some dataset rows: the cache's tensors for just these rows."""
    sr = params.sample.sample_rate
    audio = [load_audio(root / r["filename"], sr) for r in rows]
    with torch.no_grad():
        latents = codec(torch.from_numpy(np.stack(audio))).transpose(1, 2)  # [batch, frames, channels]
    texts = [t for r in rows for t in variant_texts(r)]
    formatted = [
        format_prompt(t, r["bpm"], r["keyscale"], params.sample.clip_seconds) for r in rows for t in variant_texts(r)
    ]
    states, masks = encode_text(tokenizer, text_encoder, formatted)
    lyric_states, lyric_mask = encode_lyrics(tokenizer, text_encoder, 1)  # every clip is instrumental
    keyscales = [r["keyscale"] for r in rows]
    return {
        "latents": latents.contiguous(),
        "text_states": states.half().view(len(rows), len(VARIANTS), *states.shape[1:]),  # fp16 halves the cache
        "text_mask": masks.view(len(rows), len(VARIANTS), -1).to(torch.uint8),
        "embeddings": embed(tokenizer, text_encoder, texts).view(len(rows), len(VARIANTS), -1),
        "bpm": torch.tensor([float(r["bpm"]) for r in rows]),
        "major": torch.tensor([parse_keyscale(k)[1] == "major" for k in keyscales], dtype=torch.float32),
        "phase": torch.tensor([beat_phase(a, sr, r["bpm"]) for a, r in zip(audio, rows, strict=True)]),
        "lyric_states": lyric_states[0].contiguous(),
        "lyric_mask": lyric_mask[0].to(torch.uint8),
        "keyscale": keyscales,
    }


def encode_split(
    split: datasets.Dataset, root: Path, codec: AudioEncoder, tokenizer, text_encoder, params: Params
) -> tuple[dict[str, torch.Tensor], dict]:
    parts = []
    for start in tqdm(range(0, len(split), params.encode.batch_size), desc="encode", unit="batch"):
        rows = split.select(range(start, min(start + params.encode.batch_size, len(split)))).to_list()
        parts.append(encode_rows(rows, root, codec, tokenizer, text_encoder, params))
    per_clip = ("latents", "text_states", "text_mask", "embeddings", "bpm", "major", "phase")
    tensors = {k: torch.cat([p[k] for p in parts]).contiguous() for k in per_clip}
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
    dd = datasets.load_from_disk("data/dataset")
    with atomic_dir(OUT_DIR) as tmp:
        for name in ("train", "validation"):
            tensors, index = encode_split(dd[name], Path("data/dataset"), codec, tokenizer, text_encoder, params)
            save_file(tensors, tmp / f"{name}.safetensors")
            (tmp / f"{name}.json").write_text(json.dumps(index))
            log.info("encode: %s → %s", name, {k: tuple(v.shape) for k, v in tensors.items()})
