"""`clap` stage: the embedded default's CLAP — a small contrastive audio–text model trained on the corpus.

Audio: log-mel → 1-D conv encoder; text: frozen all-MiniLM-L6-v2 sentence embedding → linear projection;
symmetric InfoNCE with a learned temperature (CLIP/CLAP). Its scores are reported as `clap_local` and are
never mixed with laion-clap numbers: they measure agreement with *our* captions, not general audio."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import torch
from tqdm import tqdm

from bayes_beats.core import paths
from bayes_beats.core.atomic import atomic_dir, write_json
from bayes_beats.core.config import Params
from bayes_beats.model.clap import LocalClap
from bayes_beats.music.audio import load_audio

log = logging.getLogger(__name__)
OUT_DIR = paths.CLAP


def _clip_data(split, root: Path, model: LocalClap, tokenizer, text_encoder, sr: int):
    from bayes_beats.model.text import embed

    rows = split.to_list()
    mels = torch.stack([model.log_mel(load_audio(root / r["filename"], sr)) for r in tqdm(rows, desc="clap mels")])
    texts = [[r["prompt"], r["recaption"]["simplified"], r["recaption"]["descriptive"]] for r in rows]
    flat = [t for triple in texts for t in triple]
    emb = torch.cat([embed(tokenizer, text_encoder, flat[i : i + 64]) for i in range(0, len(flat), 64)])
    return mels, emb.view(len(rows), 3, -1)


def run(params: Params) -> None:
    from bayes_beats.model.text import load_text_encoder

    cp = params.clap
    torch.manual_seed(cp.seed)
    torch.set_num_threads(2)
    dd = datasets.load_from_disk(str(paths.DATASET))
    root, sr = paths.DATASET, params.sample.sample_rate
    text_encoder, tokenizer = load_text_encoder()
    model = LocalClap(sample_rate=sr, text_dim=text_encoder.config.hidden_size, embed_dim=cp.embed_dim)
    train_mels, train_text = _clip_data(dd["train"], root, model, tokenizer, text_encoder, sr)
    val_mels, val_text = _clip_data(dd["validation"], root, model, tokenizer, text_encoder, sr)
    crop = round(cp.crop_seconds * sr / model.config.hop_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cp.learning_rate)
    gen = torch.Generator().manual_seed(cp.seed)
    bar = tqdm(range(cp.steps), desc="clap")
    for _ in bar:
        idx = torch.randperm(len(train_mels), generator=gen)[: cp.batch_size]
        starts = torch.randint(0, train_mels.shape[-1] - crop + 1, (len(idx),), generator=gen)
        mel = torch.stack([train_mels[i, :, s : s + crop] for i, s in zip(idx, starts, strict=True)])
        variant = torch.randint(0, 3, (len(idx),), generator=gen)
        loss = model.loss(model.embed_mel(mel), model.embed_text(train_text[idx, variant]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        sims = model.embed_mel(val_mels) @ model.embed_text(val_text[:, 0]).T  # [audio, text]
    matched = sims.diag()
    metrics = {
        "steps": cp.steps,
        "final_loss": round(loss.item(), 4),
        "val_clips": len(val_mels),
        "val_text_to_audio_recall_at_1": round(float((sims.argmax(0) == torch.arange(len(sims))).float().mean()), 4),
        "val_matched_cosine": round(float(matched.mean()), 4),
        "val_unmatched_cosine": round(float((sims.sum() - matched.sum()) / (sims.numel() - len(sims))), 4),
    }
    with atomic_dir(OUT_DIR) as tmp:
        model.save_pretrained(tmp)
    write_json(paths.CLAP_METRICS, metrics)
    log.info("clap: %s", metrics)
