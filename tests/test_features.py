import numpy as np
import pandas as pd
from conftest import params_with

from bayes_beats.core.skips import SkipLog
from bayes_beats.features import compute
from bayes_beats.music.analysis import estimate_key
from bayes_beats.music.audio import load_audio


def test_key_profile_finds_a_minor_triad():
    chroma = np.full(12, 0.1)
    chroma[[9, 0, 4]] = 1.0  # A C E
    tonic, mode, confidence = estimate_key(chroma)
    assert (tonic, mode) == (9, "minor") and confidence > 0


def test_features_match_synth_ground_truth(synth_corpus, tmp_path):
    """bpm within 4 % (or at double/half) on >= 90 % of clips, mode right on >= 85 %."""
    truth = pd.read_csv(synth_corpus / "ground_truth.csv")
    clips = []
    for row in truth.itertuples():  # a 10-s crop from the middle of each 12-s track
        from bayes_beats.music.audio import write_wav

        audio = load_audio(synth_corpus / row.path, 22050)[22050 : 22050 * 11]
        path = tmp_path / f"{row.track_id}.wav"
        write_wav(path, audio, 22050)
        clips.append({"clip_id": row.track_id, "path": str(path)})
    features = compute(pd.DataFrame(clips), 22050, params_with(features={"workers": 2}).features, SkipLog("test"))
    merged = truth.merge(features, left_on="track_id", right_on="clip_id", suffixes=("_true", ""))
    ratio = merged["bpm"] / merged["bpm_true"]
    tempo_ok = np.min([np.abs(ratio * m - 1) for m in (1, 2, 0.5)], axis=0) < 0.04
    assert tempo_ok.mean() >= 0.9, tempo_ok.mean()
    assert (merged["mode"] == merged["mode_true"]).mean() >= 0.85
    assert merged["centroid_hz"].gt(0).all() and merged["onset_rate"].gt(0).all()
