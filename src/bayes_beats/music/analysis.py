"""What librosa hears in a clip: tempo, key and mode, loudness, brightness, onset rate.

One analysis for the data (the `features` stage), the codec report, evaluation and the request log."""

from __future__ import annotations

import librosa
import numpy as np
import pyloudnorm

from bayes_beats.core.config import FeaturesParams
from bayes_beats.music.theory import PITCH_CLASSES

# Temperley's (1999) revised key profiles, tonic first. On the synth corpus they gave mode 98.7 %
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


BEAT_HOP = 256  # 11.6 ms at 22.05 kHz: the beat phase to a few ms


def beat_grid(audio: np.ndarray, sr: int, bpm: float) -> float:
    """Time (s, in (−2 beats, 0]) of a strong beat at or before the clip's start, given its tempo.

    The beat phase is the offset whose comb of beats collects the most onset strength (on the corpus:
    within 5 % of a beat on 94 % of clips against 14 % for the first beat librosa's tracker reports);
    of the two beats of a half bar, the strong one is where the low band (kick) hits harder."""
    period = 60.0 / bpm
    env = librosa.onset.onset_strength(y=audio, sr=sr, hop_length=BEAT_HOP)
    spec = np.abs(librosa.stft(audio, n_fft=2048, hop_length=BEAT_HOP))
    low = librosa.onset.onset_strength(  # below 160 Hz: the kick
        S=librosa.amplitude_to_db(spec[: int(160 * 2048 / sr) + 1]), sr=sr, hop_length=BEAT_HOP
    )
    rate = sr / BEAT_HOP

    def comb(envelope: np.ndarray, offset: float, step: float) -> float:
        idx = np.round((offset + np.arange(0, len(envelope) / rate / step) * step) * rate).astype(int)
        return float(envelope[idx[idx < len(envelope)]].mean())

    offsets = np.arange(0, period, 1 / rate)
    phase = float(offsets[int(np.argmax([comb(env, o, period) for o in offsets]))])
    strong = max((phase, phase + period), key=lambda o: comb(low, o, 2 * period))
    return strong - 2 * period if strong > 0 else 0.0


# the 24 major and minor triads as pitch-class sets: what a beat's chroma is matched against
TRIADS = np.array(
    [
        [1.0 if (pc - root) % 12 in shape else 0.0 for pc in range(12)]
        for shape in ((0, 4, 7), (0, 3, 7))
        for root in range(12)
    ]
)


def beat_chords(audio: np.ndarray, sr: int, bpm: float, origin_s: float, beats: int) -> np.ndarray:
    """[beats, 12] of ±1: per beat from `origin_s`, the major or minor triad whose template best matches
    the beat's mean chroma (Fujishima's chord templates): its tones +1, the rest −1. Raw top-3 chroma
    bins, tried first, let melody notes into the chord; progressions drawn from those read as another key
    (generated key accuracy 58 % against 100 % with clean triads, docs/ablation.md).

    A beat with no audio under it (past the end) repeats the last one heard."""
    hop = 512
    chroma = librosa.feature.chroma_stft(y=audio, sr=sr, n_fft=4096, hop_length=hop)  # [12, frames]
    period, rate = 60.0 / bpm, sr / hop
    out = -np.ones((beats, 12), dtype=np.float32)
    for k in range(beats):
        lo, hi = max(0, int((origin_s + k * period) * rate)), int((origin_s + (k + 1) * period) * rate)
        if hi <= lo or lo >= chroma.shape[1]:
            out[k] = out[k - 1] if k else out[k]
            continue
        heard = chroma[:, lo:hi].mean(axis=1)
        out[k] = 2.0 * TRIADS[int(np.argmax(TRIADS @ (heard / (np.linalg.norm(heard) + 1e-9))))] - 1.0
    return out
