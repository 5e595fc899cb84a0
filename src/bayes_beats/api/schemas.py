"""What the service speaks: request/response schemas, WAV encoding and request-guarding middleware.
Kept out of serving/service.py so that file stays a thin BentoML wrapper and this is testable alone."""

from __future__ import annotations

import base64

import numpy as np
from pydantic import BaseModel, Field, field_validator

from bayes_beats.music.audio import wav_bytes
from bayes_beats.music.theory import KEYSCALE_PATTERN


class RenderRequest(BaseModel):
    """One generation: what /generate takes and what the batching renderer receives."""

    prompt: str = Field(min_length=1, max_length=500, description="the vibe, in words")
    duration_s: float = Field(10.0, ge=1.0, le=30.0, description="seconds of audio (the profile may narrow this)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    num_variations: int = Field(1, ge=1, le=4, description="variational samples of the same vibe")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = the deterministic mean embedding")
    bpm: float | None = Field(None, ge=40, le=220)
    keyscale: str | None = Field(None, pattern=KEYSCALE_PATTERN)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("prompt is blank")
        if any(ord(ch) < 32 and ch not in "\t\n" for ch in prompt):
            raise ValueError("prompt contains control characters")
        return prompt.strip()

    def group_key(self) -> tuple:
        """Requests with equal keys go through the pipeline as one batch (prompts and seeds may differ)."""
        return (self.duration_s, self.num_variations, self.temperature, self.bpm, self.keyscale)


class Rendered(BaseModel):
    sample_rate: int
    wavs: list[str]  # base64 WAV per variation
    bpm: list[float]
    keyscale: list[str]
    model_version: str


def encode_wav(audio: np.ndarray, sample_rate: int) -> str:
    return base64.b64encode(wav_bytes(audio, sample_rate)).decode("ascii")


def variations_json(rendered: Rendered, **extra: object) -> dict:
    return {
        "sample_rate": rendered.sample_rate,
        "model_version": rendered.model_version,
        "variations": [
            {"wav_base64": wav, "bpm": bpm, "keyscale": key}
            for wav, bpm, key in zip(rendered.wavs, rendered.bpm, rendered.keyscale, strict=True)
        ],
        **extra,
    }
