import numpy as np
import pandas as pd
import soundfile as sf
from conftest import params_with

from bayes_beats import corpus
from bayes_beats.music.moods import OFFICIAL_TAGS, TAG_PREFIX


def test_corpus_is_written_in_the_mtg_jamendo_layout(synth_corpus):
    raw = (synth_corpus / "autotagging_moodtheme.tsv").read_bytes()
    lines = raw.split(b"\r\n")
    assert lines[0] == b"TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF everywhere, as the real file
    first = lines[1].decode().split("\t")
    assert first[0].startswith("track_") and first[3].split("/")[0].isdigit()
    assert all(t.startswith(TAG_PREFIX) and t[len(TAG_PREFIX) :] in OFFICIAL_TAGS for t in first[5:])
    info = sf.info(synth_corpus / first[3])
    assert info.samplerate == 22050 and abs(info.duration - 12) < 0.01


def test_ground_truth_lies_beside_the_tsv(synth_corpus):
    truth = pd.read_csv(synth_corpus / "ground_truth.csv")
    assert len(truth) == 60
    assert {"track_id", "bpm", "key", "mode", "valence", "arousal", "tags"} <= set(truth.columns)
    assert set(truth["mode"]) == {"major", "minor"}


def test_moods_drive_tempo_and_mode(synth_corpus):
    truth = pd.read_csv(synth_corpus / "ground_truth.csv")
    rho = truth["arousal"].corr(truth["bpm"], method="spearman")
    assert rho > 0.6, rho
    positive, negative = truth[truth["valence"] > 0.3], truth[truth["valence"] < -0.3]
    assert (positive["mode"] == "major").mean() > (negative["mode"] == "major").mean() + 0.3


def test_same_seed_gives_the_same_audio(tmp_path):
    params = params_with(corpus={"n_tracks": 3, "track_seconds": 3, "workers": 1}).corpus
    a = corpus.generate(params, tmp_path / "a")
    b = corpus.generate(params, tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)
    for rel in a["path"]:
        assert np.array_equal(sf.read(tmp_path / "a" / rel)[0], sf.read(tmp_path / "b" / rel)[0])
