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
from bayes_beats.codec import SpectrogramCodec
from bayes_beats.config import Params
from bayes_beats.model import embed, encode_lyrics, encode_text, format_prompt, load_text_encoder
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


def encode_split(
    split: datasets.Dataset, root: Path, codec: SpectrogramCodec, tokenizer, text_encoder, params: Params
) -> tuple[dict[str, torch.Tensor], dict]:
    sr, batch = params.sample.sample_rate, params.encode.batch_size
    latents, states, masks, embeddings, phases = [], [], [], [], []
    for start in tqdm(range(0, len(split), batch), desc="encode", unit="batch"):
        rows = split.select(range(start, min(start + batch, len(split)))).to_list()
        audio = [load_audio(root / r["filename"], sr) for r in rows]
        with torch.no_grad():
            latents.append(
                codec.encode(torch.from_numpy(np.stack(audio))).transpose(1, 2)
            )  # [batch, frames, bands]
        phases += [beat_phase(a, sr, r["bpm"]) for a, r in zip(audio, rows, strict=True)]
        texts = [t for r in rows for t in variant_texts(r)]
        formatted = [
            format_prompt(t, r["bpm"], r["keyscale"], params.sample.clip_seconds)
            for r in rows
            for t in variant_texts(r)
        ]
        s, m = encode_text(tokenizer, text_encoder, formatted)
        states.append(s.half().view(len(rows), len(VARIANTS), *s.shape[1:]))  # fp16 halves the cache
        masks.append(m.view(len(rows), len(VARIANTS), -1))
        embeddings.append(embed(tokenizer, text_encoder, texts).view(len(rows), len(VARIANTS), -1))
    keyscales = list(split["keyscale"])
    tensors = {
        "latents": torch.cat(latents).contiguous(),
        "text_states": torch.cat(states).contiguous(),
        "text_mask": torch.cat(masks).to(torch.uint8).contiguous(),
        "embeddings": torch.cat(embeddings).contiguous(),
        "bpm": torch.tensor(list(split["bpm"]), dtype=torch.float32),
        "major": torch.tensor([parse_keyscale(k)[1] == "major" for k in keyscales], dtype=torch.float32),
        "phase": torch.tensor(phases, dtype=torch.float32),
    }
    lyric_states, lyric_mask = encode_lyrics(tokenizer, text_encoder, 1)  # every clip is instrumental
    tensors |= {"lyric_states": lyric_states[0].contiguous(), "lyric_mask": lyric_mask[0].to(torch.uint8)}
    return tensors, {"keys": list(split["keys"]), "keyscale": keyscales, "variants": list(VARIANTS)}


def run(params: Params) -> None:
    torch.set_num_threads(2)
    codec = SpectrogramCodec.from_pretrained("models/codec")
    tokenizer, text_encoder = load_text_encoder()[::-1]
    dd = datasets.load_from_disk("data/dataset")
    with atomic_dir(OUT_DIR) as tmp:
        for name in ("train", "validation"):
            tensors, index = encode_split(
                dd[name], Path("data/dataset"), codec, tokenizer, text_encoder, params
            )
            save_file(tensors, tmp / f"{name}.safetensors")
            (tmp / f"{name}.json").write_text(json.dumps(index))
            log.info("encode: %s → %s", name, {k: tuple(v.shape) for k, v in tensors.items()})
