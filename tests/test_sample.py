"""Bad input never crashes `sample` and is never dropped silently: each reason is counted."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from conftest import BIN, params_with

from bayes_beats import sample
from bayes_beats.data.jamendo import DataError
from bayes_beats.data.synth import plan_track, render_track

HEADER = b"TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"


def music(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(0)
    mono = render_track(plan_track(rng), seconds, sr, rng)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def row(track: int, path: bytes, duration: bytes = b"12.0", tags: bytes = b"mood/theme---calm") -> bytes:
    return b"\t".join([f"track_{track:07d}".encode(), b"artist_1", b"album_1", path, duration, tags])


@pytest.fixture
def broken_jamendo(tmp_path):
    root = tmp_path / "jamendo"
    for d in range(1, 20):
        (root / f"{d:02d}").mkdir(parents=True)
    sf.write(root / "01/1.wav", music(12, 8000), 8000)  # 8 kHz mono
    sf.write(root / "02/2.flac", music(11, 96000, channels=6), 96000)  # 96 kHz, 6 channels
    sf.write(root / "03/3.mp3", music(12, 44100, channels=2), 44100)  # real MP3, stereo
    sf.write(root / "04/4.ogg", music(12, 48000, channels=2), 48000)
    (root / "05/5.mp3").write_bytes(np.random.default_rng(1).bytes(20_000))  # corrupt
    (root / "06/6.wav").write_bytes(b"")  # empty file
    sf.write(root / "07/7.wav", np.zeros(0, dtype=np.float32), 22050)  # zero-length
    sf.write(root / "08/8.wav", music(12, 22050), 22050)
    full = (root / "08/8.wav").read_bytes()
    (root / "08/8.wav").write_bytes(full[: len(full) // 4])  # truncated to 3 s
    (root / "09/9.mid").write_bytes(b"MThd\x00\x00\x00\x06")  # unsupported format
    sf.write(root / "10/10.wav", music(4, 22050), 22050)  # shorter than the crop
    sf.write(root / "16/16.wav", np.zeros(12 * 22050, dtype=np.float32), 22050)  # silence
    rows = [
        row(1, b"01/1.wav", tags=b"mood/theme---calm\tmood/theme---zzz"),
        row(2, b"02/2.flac", b"11.0", b"mood/theme---happy"),
        row(3, b"03/3.mp3", tags=b"mood/theme---sad"),
        row(4, b"04/4.ogg", tags=b"mood/theme---epic"),
        row(5, b"05/5.mp3"),
        row(6, b"06/6.wav"),
        row(7, b"07/7.wav"),
        row(8, b"08/8.wav"),
        row(9, b"09/9.mid"),
        row(10, b"10/10.wav"),
        row(11, b"11/11.mp3"),  # file missing
        row(12, b"01/1.wav", tags=b"mood/theme---nonsense"),  # no known tags
        row(13, b"01/1.wav", duration=b"abc"),  # bad duration
        row(14, b"14/\xff\xfe.mp3"),  # non-UTF-8 name
        b"track_0000015\tartist\talbum\t15/15.mp3",  # malformed row
        row(16, b"16/16.wav"),
    ]
    (root / "autotagging_moodtheme.tsv").write_bytes(b"\r\n".join([HEADER, *rows]) + b"\r\n")
    return root


def test_bad_inputs_are_skipped_and_counted_by_reason(broken_jamendo, workdir):
    params = params_with(
        data={"source": "jamendo", "path": str(broken_jamendo)},
        sample={"n_tracks": 100, "clips_per_track": 2, "clip_seconds": 10},
    )
    sample.run(params)
    report = json.loads((workdir / "data/sampled/skipped.json").read_text())
    skipped = report["skipped"]
    assert report["tracks_in"] == 16
    assert report["tracks_kept"] == 4
    expected = {
        "corrupt_audio": 1,
        "empty_file": 1,
        "empty_audio": 1,
        "unsupported_format": 1,
        "missing_file": 1,
        "no_known_tags": 1,
        "bad_duration": 1,
        "non_utf8": 1,
        "malformed_row": 1,
        "silent_clip": 2,
        "unknown_tag": 2,
    }
    assert {k: skipped.get(k) for k in expected} == expected
    assert skipped.get("too_short", 0) + skipped.get("corrupt_audio", 0) == 3  # short clip + truncated file
    manifest = pd.read_csv(workdir / "data/sampled/manifest.csv")
    assert sorted(manifest["track_id"].unique()) == [f"track_{i:07d}" for i in (1, 2, 3, 4)]
    for path in manifest["path"]:
        info = sf.info(workdir / path)
        assert info.samplerate == 22050 and info.channels == 1 and abs(info.duration - 10) < 1e-3
        audio, _ = sf.read(workdir / path)
        assert np.abs(audio).max() <= 10 ** (-1 / 20) + 1e-3  # peak limited at -1 dBFS


def test_sampling_is_seeded_and_crops_are_loudness_normalised(synth_corpus, workdir):
    import pyloudnorm

    params = params_with(data={"source": "jamendo", "path": str(synth_corpus)}, sample={"n_tracks": 8})
    sample.run(params)
    first = pd.read_csv(workdir / "data/sampled/manifest.csv")
    sample.run(params)
    again = pd.read_csv(workdir / "data/sampled/manifest.csv")
    pd.testing.assert_frame_equal(first, again)
    assert first["track_id"].nunique() == 8 and len(first) == 16
    audio, sr = sf.read(workdir / first["path"][0])
    assert abs(pyloudnorm.Meter(sr).integrated_loudness(audio) - params.sample.target_lufs) < 1.5


def test_a_source_with_nothing_usable_stops_with_one_clear_error(tmp_path, workdir):
    root = tmp_path / "empty_jamendo"
    root.mkdir()
    (root / "autotagging_moodtheme.tsv").write_bytes(HEADER + b"\r\n" + row(1, b"01/missing.mp3") + b"\r\n")
    params = params_with(data={"source": "jamendo", "path": str(root)})
    with pytest.raises(DataError, match="no usable tracks"):
        sample.run(params)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    cli = subprocess.run([str(BIN / "bayes-beats"), "sample"], capture_output=True, text=True)
    assert cli.returncode == 2
    assert "no usable tracks" in cli.stderr and "missing_file: 1" in cli.stderr
    assert "Traceback" not in cli.stderr
