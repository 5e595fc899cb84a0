"""The one audio loader and writer: decode anything libsndfile reads, to float32 at one rate."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from bayes_beats.core.atomic import atomic_path

SUPPORTED_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff"}


class AudioError(Exception):
    """A file that cannot be used as audio; `reason` is the skip-count key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def load_audio(path: str | Path, sample_rate: int, mono: bool = True) -> np.ndarray:
    """Decode `path` and resample to `sample_rate`.

    Returns float32 [samples] when mono (channels averaged), else [channels, samples].
    Raises AudioError with a reason for missing, empty, unsupported or undecodable files.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError("missing_file", str(path))
    if path.stat().st_size == 0:
        raise AudioError("empty_file", str(path))
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise AudioError("unsupported_format", f"{path.suffix or 'no suffix'} ({path.name})")
    try:
        data, native_rate = sf.read(path, dtype="float32", always_2d=True)  # [samples, channels]
    except Exception as err:  # libsndfile raises LibsndfileError, RuntimeError or TypeError
        raise AudioError("corrupt_audio", f"{path.name}: {err}") from err
    if data.shape[0] == 0:
        raise AudioError("empty_audio", f"{path.name}: 0 samples")
    if not np.isfinite(data).all():
        raise AudioError("corrupt_audio", f"{path.name}: non-finite samples")
    if not 1000 <= native_rate <= 384_000:
        raise AudioError("corrupt_audio", f"{path.name}: sample rate {native_rate}")
    if mono:
        data = data.mean(axis=1, keepdims=True)
    if native_rate != sample_rate:
        data = soxr.resample(data, native_rate, sample_rate, quality="HQ")
    out = np.ascontiguousarray(data.T, dtype=np.float32)  # [channels, samples]
    return out[0] if mono else out


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV, written atomically. `audio` is [samples] or [channels, samples]."""
    frames = audio.T if audio.ndim == 2 else audio
    with atomic_path(path) as tmp:
        sf.write(tmp, np.clip(frames, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """[channels, samples] float → 16-bit PCM WAV."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio.T, -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
