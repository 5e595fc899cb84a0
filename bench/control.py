"""Control accuracy: when the caller fixes bpm and keyscale, do they land in the audio?

24 clips of 10 s, one per key (12 tonics × major/minor), tempi spread over 64–144 BPM, a fixed prompt
set and seeds, temperature 0. The audio is read by an analysis independent of the project's features
module: Temperley's key profiles on STFT chroma, and librosa's tempogram tempo
(no octave folding, so half or double time counts as a miss). The same analysis on the corpus's own
clips against its ground truth shows how far the reader itself can be trusted.

    python bench/control.py [model_dir ...]   → bench/control.json (also merged into make bench's results)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import librosa
import numpy as np
import pandas as pd

from bayes_beats.core import paths
from bayes_beats.music.theory import PITCH_CLASSES

# Temperley (2007) key profiles, major and minor, tonic first
MAJOR = np.array([5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0])
MINOR = np.array([5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0])
PROMPTS = ("a calm evening by the sea", "energetic city lights", "a dark stormy night", "a happy sunny morning")
TOLERANCE = 0.03


def read_key(audio: np.ndarray, sr: int) -> tuple[int, str]:
    chroma = librosa.feature.chroma_stft(y=audio, sr=sr, n_fft=4096, hop_length=1024).mean(axis=1)
    scores = [
        (float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1]), tonic, mode)
        for mode, profile in (("major", MAJOR), ("minor", MINOR))
        for tonic in range(12)
    ]
    _, tonic, mode = max(scores)
    return tonic, mode


def read_tempo(audio: np.ndarray, sr: int) -> float:
    onset = librosa.onset.onset_strength(y=audio, sr=sr, hop_length=512)
    # librosa's default log-normal prior around 120 BPM (one octave wide) picks the beat level a listener
    # taps; nothing folds the answer afterwards, so half or double time stays a miss
    return float(librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=512)[0])


def score(audio: list[np.ndarray], sr: int, bpm: list[float], keys: list[str]) -> dict:
    tempo = np.array([read_tempo(a, sr) for a in audio])
    read = [read_key(a, sr) for a in audio]
    asked = [(PITCH_CLASSES.index(k.split()[0]), k.split()[1]) for k in keys]
    error = np.abs(tempo - np.array(bpm)) / np.array(bpm)
    ratio = tempo / np.array(bpm)
    return {
        "clips": len(audio),
        "tempo_within_3pct": round(float((error <= TOLERANCE).mean()), 3),
        "tempo_median_error_pct": round(float(np.median(error) * 100), 1),
        "tempo_half_or_double": round(float(((np.abs(ratio - 0.5) < 0.03) | (np.abs(ratio - 2) < 0.06)).mean()), 3),
        "mode_accuracy": round(float(np.mean([r[1] == a[1] for r, a in zip(read, asked, strict=True)])), 3),
        "key_accuracy": round(float(np.mean([r == a for r, a in zip(read, asked, strict=True)])), 3),
    }


def requests(n: int = 24) -> list[dict]:
    """The fixed request set: every key once, tempi evenly over 64–144 BPM in a shuffled (seeded) order."""
    keys = [f"{PITCH_CLASSES[t]} {m}" for m in ("major", "minor") for t in range(12)][:n]
    tempi = np.random.default_rng(0).permutation(np.linspace(64, 144, n))
    return [
        {"prompt": PROMPTS[i % len(PROMPTS)], "bpm": round(float(b), 1), "keyscale": k, "seed": i}
        for i, (b, k) in enumerate(zip(tempi, keys, strict=True))
    ]


def measure_model(model_dir: str | Path, seconds: float = 10.0) -> dict:
    from bayes_beats.model.generate import load_generator

    gen, asked = load_generator(model_dir), requests()
    audio = []
    for r in asked:  # one request at a time, as a caller sends them
        out, _ = gen.generate_with_plans(
            [r["prompt"]], seconds, r["seed"], temperature=0.0, bpm=r["bpm"], keyscale=r["keyscale"]
        )
        audio.append(out[0][0][0])
    return score(audio, gen.sample_rate, [r["bpm"] for r in asked], [r["keyscale"] for r in asked])


def measure_corpus(n: int = 96, sample_rate: int = 22050) -> dict | None:
    """The reader on the corpus's own clips against the ground truth the corpus wrote."""
    truth_file = paths.RAW / "ground_truth.csv"
    if not truth_file.is_file() or not paths.MANIFEST.is_file():
        return None
    truth = pd.read_csv(truth_file, usecols=["track_id", "bpm", "keyscale"])
    clips = pd.read_csv(paths.MANIFEST).merge(truth, on="track_id").head(n)
    audio = [librosa.load(p, sr=sample_rate)[0] for p in clips["path"]]
    return score(audio, sample_rate, list(clips["bpm"]), list(clips["keyscale"]))


def main(model_dirs: list[str] | None = None) -> dict:
    results: dict = {"reader_on_corpus": measure_corpus()}
    results |= {str(m): measure_model(m) for m in model_dirs or [str(paths.BASE), str(paths.FINETUNED)]}
    return results


if __name__ == "__main__":
    out = main(sys.argv[1:])
    Path("bench/control.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
