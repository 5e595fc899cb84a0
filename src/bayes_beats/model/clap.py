"""The embedded default's CLAP: an audio tower trained against the frozen MiniLM sentence embedding
(reported as clap_local). Trained by the `clap` stage."""

from __future__ import annotations

import math

import librosa
import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


class LocalClap(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        sample_rate: int = 22050,
        n_mels: int = 64,
        hop_length: int = 512,
        text_dim: int = 384,
        width: int = 128,
        embed_dim: int = 256,
        window_seconds: float = 10.0,
    ):
        super().__init__()
        self.audio = nn.Sequential(
            nn.Conv1d(n_mels, width, 5, stride=2, padding=2),
            nn.GELU(),
            nn.Conv1d(width, width * 2, 5, stride=2, padding=2),
            nn.GELU(),
            nn.Conv1d(width * 2, width * 2, 3, padding=1),
            nn.GELU(),
        )
        self.audio_proj = nn.Linear(width * 4, embed_dim)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def log_mel(self, audio: np.ndarray) -> torch.Tensor:
        """Mono audio at `sample_rate` → [n_mels, frames]."""
        mel = librosa.feature.melspectrogram(
            y=audio, sr=self.config.sample_rate, n_mels=self.config.n_mels, hop_length=self.config.hop_length
        )
        return torch.from_numpy(np.log(mel + 1e-5)).float()

    def embed_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """[batch, n_mels, frames] → unit vectors [batch, embed_dim] (mean and max pooled over time)."""
        h = self.audio((mel + 5.0) / 5.0)
        return nn.functional.normalize(self.audio_proj(torch.cat([h.mean(-1), h.amax(-1)], dim=-1)), dim=-1)

    def embed_text(self, sentence_embeddings: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.text_proj(sentence_embeddings), dim=-1)

    def loss(self, audio: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        logits = self.logit_scale.exp().clamp(max=100) * audio @ text.T
        target = torch.arange(len(audio))
        return (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
