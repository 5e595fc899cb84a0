"""What librosa hears in a clip: tempo, key and mode, loudness, brightness, onset rate.

One analysis for the data (the `features` stage), the codec report, evaluation and the request log."""

from __future__ import annotations

import librosa
import numpy as np
import pyloudnorm

from bayes_beats.core.config import FeaturesParams
from bayes_beats.music.theory import PITCH_CLASSES

# Temperley's (1999) Kostka–Payne key profiles, tonic first. On the synth corpus they gave mode 98.7 %
# against 82 % for Krumhansl–Kessler (150 clips, chroma_stft), which confuses minor with its relative major.
MAJOR_PROFILE = np.array([5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0])

MINOR_PROFILE = np.array([5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0])


def estimate_key(chroma_mean: np.ndarray) -> tuple[int, str, float]:
    """Best of the 24 rotated key profiles by correlation → (tonic, mode, confidence).

    Confidence is the margin of the best key over the best key of the other mode."""
    scores = {
        (tonic, mode): float(np.corrcoef(np.roll(profile, tonic), chroma_mean)[0, 1])
        for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE))
        for tonic in range(12)
    }
    (tonic, mode), best = max(scores.items(), key=lambda kv: kv[1])
    other = max(v for (t, m), v in scores.items() if m != mode)
    return tonic, mode, best - other


def estimate_bpm(onset_env: np.ndarray, sr: int, hop: int) -> float:
    """Tempo from the slope of the tracked beat times: sub-frame precise, unlike the tempogram peak."""
    tempo, beats = librosa.beat.beat_track(onset_envelope=onset_env, sr=sr, hop_length=hop, units="time")
    if len(beats) >= 4:
        slope = np.polyfit(np.arange(len(beats)), beats, 1)[0]
        return float(60.0 / slope)
    return float(np.atleast_1d(tempo)[0])


def extract(audio: np.ndarray, sr: int, params: FeaturesParams) -> dict[str, float]:
    """All features of one mono clip."""
    hop = params.hop_length
    onset_env = librosa.onset.onset_strength(y=audio, sr=sr, hop_length=hop)
    chroma = librosa.feature.chroma_stft(y=audio, sr=sr, hop_length=hop, n_fft=params.chroma_n_fft)  # [12, frames]
    chroma_mean = chroma.mean(axis=1)
    tonic, mode, confidence = estimate_key(chroma_mean)
    rms_db = librosa.amplitude_to_db(librosa.feature.rms(y=audio, hop_length=hop)[0], ref=1.0)
    centroid = librosa.feature.spectral_centroid(y=audio, sr=sr, hop_length=hop)[0]
    onsets = librosa.onset.onset_detect(onset_envelope=onset_env, sr=sr, hop_length=hop)
    mfcc = librosa.feature.mfcc(y=audio, sr=sr, n_mfcc=params.n_mfcc, hop_length=hop).mean(axis=1)
    row: dict[str, float] = {
        "bpm": estimate_bpm(onset_env, sr, hop),
        "tonic": tonic,
        "key": PITCH_CLASSES[tonic],  # type: ignore[dict-item]
        "mode": mode,  # type: ignore[dict-item]
        "keyscale": f"{PITCH_CLASSES[tonic]} {mode}",  # type: ignore[dict-item]
        "mode_confidence": confidence,
        "loudness_lufs": float(pyloudnorm.Meter(sr).integrated_loudness(audio)),
        "rms_db": float(rms_db.mean()),
        "dynamic_range_db": float(np.percentile(rms_db, 95) - np.percentile(rms_db, 5)),
        "centroid_hz": float(centroid.mean()),
        "onset_rate": len(onsets) / (len(audio) / sr),
    }
    row.update({f"chroma_{i}": float(v) for i, v in enumerate(chroma_mean)})
    row.update({f"mfcc_{i}": float(v) for i, v in enumerate(mfcc)})
    return row
