"""CLAP scoring: mean cosine similarity between text and audio embeddings. One interface, two backends:
`local` (the `clap` stage's model; reported as clap_local) and `laion` (laion-clap from a local checkpoint).
Audio is embedded over deterministic, non-overlapping windows (10 s) that are averaged — never a random crop."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import soxr
import torch

from bayes_beats.core import paths


class Scorer(Protocol):
    name: str

    def embed_audio(self, audio: list[np.ndarray], sample_rate: int) -> np.ndarray: ...
    def embed_text(self, texts: list[str]) -> np.ndarray: ...


def windows(audio: np.ndarray, size: int) -> np.ndarray:
    """Mono audio → [n, size] consecutive windows; the tail is kept when at least half a window, zero-padded."""
    n = max(1, (len(audio) + size // 2) // size)
    padded = np.zeros(n * size, dtype=np.float32)
    padded[: min(len(audio), n * size)] = audio[: n * size]
    return padded.reshape(n, size)


def mono(audio: np.ndarray) -> np.ndarray:
    return audio.mean(axis=0) if audio.ndim == 2 else audio


def clap_scores(scorer: Scorer, texts: list[str], audio: list[np.ndarray], sample_rate: int) -> np.ndarray:
    """Cosine similarity of each text with its own audio → [n]."""
    t, a = scorer.embed_text(texts), scorer.embed_audio(audio, sample_rate)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    return (t * a).sum(axis=1)


class LocalClapScorer:
    name = "clap_local"

    def __init__(self, model_dir: str | Path = paths.CLAP) -> None:
        from bayes_beats.model.clap import LocalClap
        from bayes_beats.model.text import load_text_encoder

        self.model = LocalClap.from_pretrained(model_dir).eval()
        self.text_encoder, self.tokenizer = load_text_encoder()

    @torch.no_grad()
    def embed_audio(self, audio: list[np.ndarray], sample_rate: int) -> np.ndarray:
        sr = self.model.config.sample_rate
        size = int(self.model.config.window_seconds * sr)
        out = []
        for clip in audio:
            clip = soxr.resample(mono(clip), sample_rate, sr) if sample_rate != sr else mono(clip)
            mels = torch.stack([self.model.log_mel(w) for w in windows(clip.astype(np.float32), size)])
            out.append(self.model.embed_mel(mels).mean(0))
        return torch.stack(out).numpy()

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        from bayes_beats.model.text import embed

        return self.model.embed_text(embed(self.tokenizer, self.text_encoder, texts)).numpy()


class LaionClapScorer:
    """laion-clap from a local checkpoint: 48 kHz mono, 10-s windows averaged (the model's own crop is random).

    `630k-*` checkpoints use HTSAT-tiny, `music_audioset_epoch_15_esc_90.14.pt` HTSAT-base. Needs roberta-base
    in the Hugging Face cache (the GPU image bakes it in); import with HF_HUB_OFFLINE=1 to avoid hub retries."""

    name = "clap_laion"
    rate = 48000

    def __init__(self, checkpoint: str | Path, audio_model: str = "HTSAT-tiny", text_model: str = "roberta") -> None:
        import laion_clap

        self.text_model = text_model
        self.model = laion_clap.CLAP_Module(enable_fusion=False, amodel=audio_model, tmodel=text_model)
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        state = state.get("state_dict", state)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state.pop("text_branch.embeddings.position_ids", None)  # absent from recent transformers' RoBERTa
        self.model.model.load_state_dict(state, strict=True)  # a wrong audio_model fails here, loudly
        self.model.eval()

    @torch.no_grad()
    def embed_audio(self, audio: list[np.ndarray], sample_rate: int) -> np.ndarray:
        out = []
        for clip in audio:
            clip = mono(clip)
            clip = soxr.resample(clip, sample_rate, self.rate) if sample_rate != self.rate else clip
            emb = self.model.get_audio_embedding_from_data(
                x=windows(clip.astype(np.float32), 10 * self.rate), use_tensor=False
            )
            out.append(np.asarray(emb).mean(0))
        return np.stack(out)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        if self.text_model == "roberta":
            return np.asarray(self.model.get_text_embedding(texts, use_tensor=False))
        from laion_clap.clap_module import tokenize

        # the 'transformer' branch takes CLIP token ids as a tensor; CLAP_Module's helper only handles dicts
        embedding = self.model.model.encode_text(tokenize(texts), device="cpu")
        return torch.nn.functional.normalize(embedding, dim=-1).numpy()


def load_scorer(
    backend: str, checkpoint: str = "", audio_model: str = "HTSAT-tiny", text_model: str = "roberta"
) -> Scorer:
    if backend == "local":
        return LocalClapScorer()
    if not checkpoint or not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"eval.clap_checkpoint={checkpoint!r}: the laion backend needs a local laion-clap checkpoint"
        )
    return LaionClapScorer(checkpoint, audio_model, text_model)
