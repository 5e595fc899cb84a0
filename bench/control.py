"""Control accuracy and the plan's reach: when the caller fixes bpm and keyscale, do they land in the audio?
And on free text, does the planner read the vibe and span the corpus's tempo range?

Control: 24 clips of 10 s, one per key (12 tonics × major/minor), tempi spread over 64–144 BPM, a fixed
prompt set and seeds, temperature 0, read by an analysis independent of the project's features module
(Temperley key profiles on STFT chroma, librosa's tempogram tempo with no octave folding, so half or
double time is a miss): evaluate.control_accuracy, which `evaluate` also logs. The same reader on the
corpus's own clips against its ground truth shows how far the reader itself can be trusted.
Plan: the planner's valence/arousal reading of the committed labelled prompts (Spearman against the
labels) and the tempo range its plans span against the corpus's for the same moods.

    python bench/control.py [model_dir ...]   → bench/control.json (also merged into make bench's results)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import librosa
import pandas as pd

from bayes_beats.core import paths
from bayes_beats.evaluate import control_accuracy, control_score, plan_reading


def measure_corpus(n: int = 96, sample_rate: int = 22050) -> dict | None:
    """The reader on the corpus's own clips against the ground truth the corpus wrote."""
    truth_file = paths.RAW / "ground_truth.csv"
    if not truth_file.is_file() or not paths.MANIFEST.is_file():
        return None
    truth = pd.read_csv(truth_file, usecols=["track_id", "bpm", "keyscale"])
    clips = pd.read_csv(paths.MANIFEST).merge(truth, on="track_id").head(n)
    audio = [librosa.load(p, sr=sample_rate)[0] for p in clips["path"]]
    return control_score(audio, sample_rate, list(clips["bpm"]), list(clips["keyscale"]))


def measure_model(model_dir: str) -> dict:
    from bayes_beats.model.generate import load_generator

    gen = load_generator(model_dir)
    return {"control": control_accuracy(gen), "plan": plan_reading(gen)}


def main(model_dirs: list[str] | None = None) -> dict:
    results: dict = {"reader_on_corpus": measure_corpus()}
    results |= {str(m): measure_model(m) for m in model_dirs or [str(paths.BASE), str(paths.FINETUNED)]}
    return results


if __name__ == "__main__":
    out = main(sys.argv[1:])
    Path("bench/control.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
