"""The request log (off the critical path, never failing a request) and `bayes-beats monitor` (Evidently
drift + tests, exit status 1 when a test fails) on real SQLite databases and real reports."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time

import numpy as np
import pytest
import yaml
from conftest import BIN, REPO, reference_frame

from bayes_beats.api.requestlog import Generation, RequestLog, read_requests
from bayes_beats.data.synth import plan_track, render_track
from bayes_beats.music.audio import wav_bytes

SR = 22050


@pytest.fixture(scope="module")
def clip() -> bytes:
    rng = np.random.default_rng(3)
    audio = render_track(plan_track(rng), 4.0, SR, rng)
    return wav_bytes(np.atleast_2d(audio), SR)


def generation(wav: bytes, prompt: str = "a calm piano evening", **extra) -> Generation:
    fields = dict(endpoint="generate", model_version="v1", duration_s=4.0, num_variations=1, temperature=1.0)
    return Generation(prompt=prompt, wav=wav, **{**fields, "latency_s": 0.4, **extra})


def test_rows_carry_the_prompt_the_audio_features_and_the_clap_score(tmp_path, clip, clap_dir):
    log = RequestLog(str(tmp_path / "log" / "requests.sqlite"), clap_dir=str(clap_dir))
    assert log.record(generation(clip, planned_bpm=96.0, planned_keyscale="A minor"))
    assert log.record(generation(clip, prompt="sunset colours, warm", valence=0.4, arousal=-0.2))
    log.close(timeout_s=600)  # under load, the first row (CLAP load, numba compile) can outlast the default
    rows = read_requests(str(tmp_path / "log" / "requests.sqlite"))
    assert log.counts == {"recorded": 2, "dropped": 0, "failed": 0} and len(rows) == 2
    first, second = rows.iloc[0], rows.iloc[1]
    assert 40 < first["bpm"] < 240 and first["mode"] in ("major", "minor")
    assert first["loudness_lufs"] < 0 and first["centroid_hz"] > 0 and -1 <= first["clap_local"] <= 1
    assert first["prompt_words"] == 4 and first["prompt_chars"] == len("a calm piano evening")
    assert np.isnan(first["valence"]) and second["valence"] == pytest.approx(0.4)
    assert read_requests(str(tmp_path / "log" / "requests.sqlite"), since_hours=1).shape[0] == 2


def test_measuring_keeps_to_its_share_of_a_core_and_every_row_is_still_logged(tmp_path, clip):
    path = tmp_path / "requests.sqlite"
    with pytest.raises(ValueError, match="measure_share"):
        RequestLog(str(path), measure_share=0.0)
    # a share this small: after the first (warm-up) row and one more, minutes of rows go unmeasured
    log = RequestLog(str(path), measure_share=1e-4)
    for i in range(5):
        assert log.record(generation(clip, prompt=f"a calm piano evening {i}"))
    log.close(timeout_s=600)
    rows = read_requests(str(path))
    assert log.counts["recorded"] == 5 and len(rows) == 5  # logged, all of them
    assert rows["bpm"].notna().tolist() == [True, True, False, False, False]
    assert rows["latency_s"].notna().all()


def test_a_locked_database_never_blocks_a_request_and_rows_are_counted(tmp_path, clip):
    path = tmp_path / "requests.sqlite"
    RequestLog(str(path)).close()  # creates the table
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    log = RequestLog(str(path), max_queue=4, timeout_s=0.5)
    started = time.monotonic()
    accepted = [log.record(generation(clip)) for _ in range(40)]
    assert time.monotonic() - started < 0.5  # 40 records took less than one lock timeout: none waited
    assert accepted.count(False) == log.counts["dropped"] > 0
    deadline = time.monotonic() + 60
    while log.counts["failed"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.counts["failed"] > 0  # the worker gave up on the locked database instead of hanging
    holder.rollback()
    holder.close()
    assert log.record(generation(clip, prompt="after the lock"))
    log.close(timeout_s=600)
    assert "after the lock" in set(read_requests(str(path))["prompt"])


def test_an_unwritable_log_fails_rows_not_the_caller(tmp_path, clip):
    (tmp_path / "a-file").write_text("not a directory")
    log = RequestLog(str(tmp_path / "a-file" / "requests.sqlite"))
    assert log.record(generation(clip))
    log.close(timeout_s=600)
    assert log.counts == {"recorded": 0, "dropped": 0, "failed": 1}


# ---- monitor


@pytest.fixture
def monitor_dir(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "data/traffic").mkdir(parents=True)
    reference_frame(60, rng).drop(columns="latency_s").to_csv(tmp_path / "data/traffic/reference.csv", index=False)
    (tmp_path / "reports/eval").mkdir(parents=True)
    vocab = "calm piano evening happy upbeat drums dark ambient pad energetic"
    (tmp_path / "reports/eval/vocabulary.txt").write_text("\n".join(vocab.split()))
    (tmp_path / "params.yaml").write_text(monitor_params("current.csv"))
    return tmp_path


def monitor_params(requests: str, **extra) -> str:
    """The repository's params.yaml with monitor.requests and `extra` of its monitor section replaced."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["monitor"].update(requests=requests, **extra)
    return yaml.safe_dump(params)


def monitor(cwd, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, **env}
    return subprocess.run([str(BIN / "bayes-beats"), "monitor"], cwd=cwd, capture_output=True, text=True, env=environ)


def test_monitor_passes_on_requests_like_the_reference(monitor_dir):
    reference_frame(120, np.random.default_rng(1)).to_csv(monitor_dir / "current.csv", index=False)
    # env:NAME: the location (a database URL with its password, in production) comes from the environment
    (monitor_dir / "params.yaml").write_text(monitor_params("env:REQUEST_LOG_URL", fail_on_drift=True))
    done = monitor(monitor_dir, REQUEST_LOG_URL=str(monitor_dir / "current.csv"))
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((monitor_dir / "metrics/monitor.json").read_text())
    assert summary["requests"] == 120 and summary["failed"] == 0 and summary["tests"] >= 5
    assert (monitor_dir / "reports/monitor.html").stat().st_size > 10_000
    assert json.loads((monitor_dir / "reports/monitor.json").read_text())["tests"]
    prom = (monitor_dir / "reports/monitor.prom").read_text()
    assert "bayes_beats_monitor_tests_failed 0.0" in prom and "bayes_beats_monitor_drift_detected 0.0" in prom


def drifted_sample(path) -> None:
    drifted = reference_frame(120, np.random.default_rng(2))
    drifted["bpm"] += 60
    drifted["centroid_hz"] *= 2
    drifted["loudness_lufs"] -= 10
    drifted["clap_local"] -= 0.3
    drifted["latency_s"] += 30
    drifted["prompt"] = "zxq vaporwave blorp " + drifted["prompt"]
    drifted.to_csv(path, index=False)


def test_drift_is_reported_and_exits_0_so_dvc_repro_goes_on(monitor_dir):
    drifted_sample(monitor_dir / "current.csv")
    done = monitor(monitor_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tests failed" in done.stderr and "fail_on_drift" in done.stderr
    summary = json.loads((monitor_dir / "metrics/monitor.json").read_text())
    assert summary["failed"] >= 4 and any("Drifted" in f for f in summary["failures"])
    report = json.loads((monitor_dir / "reports/monitor.json").read_text())
    assert [t for t in report["tests"] if str(t["status"]).endswith("FAIL")]  # the report says so too
    assert "bayes_beats_monitor_drift_detected 1.0" in (monitor_dir / "reports/monitor.prom").read_text()


def test_drift_fails_only_in_the_alerting_mode(monitor_dir):
    drifted_sample(monitor_dir / "current.csv")
    (monitor_dir / "params.yaml").write_text(monitor_params("current.csv", fail_on_drift=True))
    done = monitor(monitor_dir)
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("bayes-beats monitor: ") and "Traceback" not in done.stderr
    failures = " ".join(json.loads((monitor_dir / "metrics/monitor.json").read_text())["failures"])
    for what in ("Drifted", "clap_local", "latency_s", "oov_pct"):
        assert what in failures, failures


def test_monitor_reads_the_service_log_and_says_when_it_is_missing(monitor_dir, clip):
    log = RequestLog(str(monitor_dir / "requests.sqlite"))
    for i in range(3):
        log.record(generation(clip, prompt=f"calm piano evening {i}"))
    log.close(timeout_s=600)
    (monitor_dir / "params.yaml").write_text(monitor_params("requests.sqlite", window_hours=24, fail_on_drift=True))
    done = monitor(monitor_dir)
    assert done.returncode == 1  # 3 requests are fewer than min_requests: that is a failed test too
    assert json.loads((monitor_dir / "metrics/monitor.json").read_text())["requests"] == 3
    (monitor_dir / "params.yaml").write_text(monitor_params("nowhere.sqlite"))
    done = monitor(monitor_dir)
    assert done.returncode == 2 and "no request log at" in done.stderr and "Traceback" not in done.stderr


def test_stream_segments_are_logged_unmeasured_between_samples_and_reported_apart(monitor_dir, clip):
    log = RequestLog(str(monitor_dir / "requests.sqlite"))
    for i in range(30):
        log.record(generation(clip, prompt=f"calm piano evening {i}"))
    for i in range(6):  # a minute of radio: the first segment measured, the rest only logged
        log.record(generation(clip, endpoint="stream", duration_s=10.0, measured=i == 0))
    log.close(timeout_s=600)
    rows = read_requests(str(monitor_dir / "requests.sqlite"))
    stream = rows[rows["endpoint"] == "stream"]
    assert len(stream) == 6 and stream["bpm"].notna().sum() == 1  # logged, one measured
    (monitor_dir / "params.yaml").write_text(monitor_params("requests.sqlite", window_hours=24))
    done = monitor(monitor_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((monitor_dir / "metrics/monitor.json").read_text())
    assert summary["requests"] == 30  # the drift tests see the takes, not the radio
    assert summary["stream"] == {"segments": 6, "minutes_listened": 1.0, "votes_per_minute_listened": 0.0}
    assert "bayes_beats_monitor_stream_minutes_listened 1.0" in (monitor_dir / "reports/monitor.prom").read_text()


def test_the_log_and_the_monitor_work_on_postgres(postgres, monitor_dir, clip):
    log = RequestLog(postgres)
    for i in range(3):
        assert log.record(generation(clip, prompt=f"calm piano evening on postgres {i}"))
    log.close(timeout_s=600)
    assert log.counts["recorded"] == 3
    rows = read_requests(postgres, since_hours=1)
    assert len(rows) >= 3 and rows["bpm"].notna().all() and str(rows["ts"].dtype).startswith("datetime64")
    (monitor_dir / "params.yaml").write_text(monitor_params("env:LOG_URL", min_requests=3))
    done = monitor(monitor_dir, LOG_URL=postgres)
    assert json.loads((monitor_dir / "metrics/monitor.json").read_text())["requests"] == len(rows), done.stderr
