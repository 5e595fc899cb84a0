"""`monitor`: are the requests the service gets, and what it answers, still like the evaluation set?

Evidently report + tests on the request log (bayes_beats.api.requestlog) against the reference that the
`traffic` stage writes (the fine-tuned model's answers at the service's defaults, in the log's columns): drift of prompt
descriptors (length, words, out-of-vocabulary rate against the training captions) and of the audio's
features (bpm, mode, loudness, brightness, onset rate, clap_local), plus floors and ceilings on the
CLAP score, latency and OOV rate. When the log is a database (not the CSV sample), also the listeners'
votes (bayes_beats.api.listeners): the like-rate (share of up votes), votes per day, and a test that the
last day's like-rate is not below `min_like_rate_ratio` of the 7 days' before. Writes reports/monitor.html
+ .json, metrics/monitor.json and reports/monitor.prom (Prometheus text format, for a textfile collector or
a Pushgateway): each says which tests failed. Finding drift is the monitor doing its job, so by default it
exits 0 and `dvc repro` goes on; `monitor.fail_on_drift: true` (the Kubernetes CronJob sets it) makes a
failed test exit 1, so the job that should page someone alerts by its exit status."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from bayes_beats.api.requestlog import prompt_words, read_requests
from bayes_beats.core import paths
from bayes_beats.core.atomic import atomic_path, write_json
from bayes_beats.core.config import MonitorParams, Params

log = logging.getLogger(__name__)
REPORT = paths.MONITOR_REPORT
REFERENCE = paths.TRAFFIC_REFERENCE
VOCABULARY = paths.EVAL_VOCABULARY
AUDIO_COLUMNS = ["bpm", "loudness_lufs", "centroid_hz", "onset_rate", "clap_local"]
PROMPT_COLUMNS = ["prompt_chars", "prompt_words", "oov_pct"]
VOTE_DAYS = 8  # votes read back: the last day against the 7 before it (whatever window_hours says)
MIN_VOTES = 10  # in each of the two periods, for the like-rate comparison to mean something


class MonitorAlert(Exception):
    """A monitoring test failed: the message names which; the exit status is 1."""


def log_location(mp: MonitorParams) -> str:
    """The request log's location: `env:NAME` reads it from that environment variable, so a database
    password stays out of params and logs."""
    location = mp.requests
    if location.startswith("env:"):
        location = os.environ.get(location.removeprefix("env:"), "")
        if not location:
            raise FileNotFoundError(f"monitor.requests is {mp.requests} but that variable is not set")
    return location


def load_current(mp: MonitorParams) -> pd.DataFrame:
    """The request log (SQLite path or SQLAlchemy URL) or a CSV export of it."""
    location = log_location(mp)
    if location.endswith(".csv"):
        if not Path(location).is_file():
            raise FileNotFoundError(f"no request sample at {location}")
        return pd.read_csv(location)
    return read_requests(location, mp.window_hours or None)


def vote_stats(votes: pd.DataFrame, now: datetime | None = None) -> dict:
    """Like-rate (share of up votes) overall, for the last 24 h and for the days before; votes per day."""
    now = now or datetime.now(UTC)
    last_day = votes["ts"] >= now - timedelta(days=1)

    def rate(frame: pd.DataFrame) -> float | None:
        return round(float((frame["vote"] > 0).mean()), 4) if len(frame) else None

    per_day = votes.groupby(votes["ts"].dt.strftime("%Y-%m-%d")).size()
    return {
        "votes": len(votes),
        "listeners": int(votes["listener"].nunique()),
        "like_rate": rate(votes),
        "like_rate_last_day": rate(votes[last_day]),
        "like_rate_before": rate(votes[~last_day]),
        "votes_last_day": int(last_day.sum()),
        "votes_before": int((~last_day).sum()),
        "votes_per_day": {day: int(n) for day, n in per_day.items()},
    }


def like_rate_failure(stats: dict, min_ratio: float) -> str | None:
    """The like-rate test: the last day's at least `min_ratio` × the days' before (with MIN_VOTES in each)."""
    last, before = stats["like_rate_last_day"], stats["like_rate_before"]
    if stats["votes_last_day"] < MIN_VOTES or stats["votes_before"] < MIN_VOTES or not before:
        return None
    if last < min_ratio * before:
        return (
            f"like_rate: the last day's {last:.2f} ({stats['votes_last_day']} votes) is below {min_ratio} × the "
            f"previous days' {before:.2f} ({stats['votes_before']} votes)"
        )
    return None


def check_votes(mp: MonitorParams) -> tuple[dict | None, str | None, bool]:
    """(vote stats or None with a note, the like-rate failure if any, whether the test ran)."""
    from bayes_beats.api.listeners import read_votes

    location = log_location(mp)
    if location.endswith(".csv"):
        return {"note": "votes are read from the service's database, not from a CSV sample: not monitored"}, None, False
    votes = read_votes(location, since_hours=VOTE_DAYS * 24)
    if votes is None or votes.empty:
        return {"votes": 0, "note": "no votes in the log"}, None, False
    stats = vote_stats(votes)
    ran = stats["votes_last_day"] >= MIN_VOTES and stats["votes_before"] >= MIN_VOTES
    return stats, like_rate_failure(stats, mp.min_like_rate_ratio), ran


def oov_descriptor(vocabulary: set[str]):
    from evidently.core.datasets import DatasetColumn

    def oov_pct(column: DatasetColumn) -> DatasetColumn:
        def pct(text: str) -> float:
            words = prompt_words(str(text))
            return 100.0 * sum(w not in vocabulary for w in words) / len(words) if words else 0.0

        return DatasetColumn(type="num", data=column.data.map(pct))

    return oov_pct


def build_report(mp: MonitorParams, unmeasured: set[str]):
    """The metrics and the tests; a column with no values in either dataset (e.g. clap_local from a
    service without a CLAP model) is left out and reported as unmeasured, since drift needs values."""
    from evidently import Report
    from evidently.metrics import DriftedColumnsCount, MeanValue, QuantileValue, RowCount
    from evidently.presets import DataDriftPreset
    from evidently.tests import gte, lte

    columns = [c for c in PROMPT_COLUMNS + AUDIO_COLUMNS + ["mode"] if c not in unmeasured]
    metrics = [
        RowCount(tests=[gte(mp.min_requests)]),
        # per-column distributions for people; the alert is on the share of columns that drifted
        DataDriftPreset(columns=columns, include_tests=False),
        DriftedColumnsCount(columns=columns, share_tests=[lte(mp.max_drifted_share)]),
        MeanValue(column="oov_pct", tests=[lte(mp.max_oov_pct)]),
    ]
    if "clap_local" not in unmeasured:
        metrics.append(MeanValue(column="clap_local", tests=[gte(mp.clap_floor)]))
    if "latency_s" not in unmeasured:
        metrics.append(QuantileValue(column="latency_s", quantile=0.95, tests=[lte(mp.max_latency_p95_s)]))
    return Report(metrics, include_tests=False)  # only the tests above: no default test per metric


def to_dataset(frame: pd.DataFrame, vocabulary: set[str]):
    from evidently import DataDefinition, Dataset
    from evidently.descriptors import CustomColumnDescriptor, TextLength, WordCount

    columns = ["prompt", "mode", "latency_s", *AUDIO_COLUMNS]
    frame = frame.reindex(columns=columns).astype({c: float for c in AUDIO_COLUMNS + ["latency_s"]})
    definition = DataDefinition(
        text_columns=["prompt"], numerical_columns=AUDIO_COLUMNS + ["latency_s"], categorical_columns=["mode"]
    )
    descriptors = [
        TextLength("prompt", alias="prompt_chars"),
        WordCount("prompt", alias="prompt_words"),
        CustomColumnDescriptor("prompt", oov_descriptor(vocabulary), alias="oov_pct"),
    ]
    return Dataset.from_pandas(frame, data_definition=definition, descriptors=descriptors)


def run(params: Params) -> None:
    mp = params.monitor
    for path in (REFERENCE, VOCABULARY):
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: `dvc repro traffic evaluate` writes it")
    vocabulary = set(VOCABULARY.read_text().split())
    reference = pd.read_csv(REFERENCE)
    current = load_current(mp)
    # the radio's segments are logged (one in six measured): their figures are the stream's, not the drift tests'
    streamed = current["endpoint"] == "stream" if "endpoint" in current else pd.Series(False, index=current.index)
    stream = stream_stats(current[streamed], mp)
    current = current[~streamed]
    log.info("monitor: %d requests against %d reference generations", len(current), len(reference))
    unmeasured = {c for c in AUDIO_COLUMNS + ["mode"] if _empty(current, c) or _empty(reference, c)}
    unmeasured |= {"latency_s"} if _empty(current, "latency_s") else set()
    if unmeasured:
        log.warning("monitor: no values for %s: not tested", ", ".join(sorted(unmeasured)))
    report = build_report(mp, unmeasured)
    snapshot = report.run(to_dataset(current, vocabulary), to_dataset(reference, vocabulary))
    with atomic_path(REPORT) as tmp:
        snapshot.save_html(str(tmp))
    with atomic_path(paths.MONITOR_JSON) as tmp:
        snapshot.save_json(str(tmp))
    tests = snapshot.dict()["tests"]
    failed = [f"{t['name']}: {t['description']}" for t in tests if str(t["status"]).endswith("FAIL")]
    votes, like_rate_failed, like_rate_tested = check_votes(mp)
    log.info("monitor: votes %s", votes)
    failed += [like_rate_failed] if like_rate_failed else []
    n_tests = len(tests) + like_rate_tested
    write_json(
        paths.MONITOR_METRICS,
        {
            "requests": len(current),
            "reference": len(reference),
            "tests": n_tests,
            "failed": len(failed),
            "failures": failed,
            "unmeasured": sorted(unmeasured),
            "clap_local_mean": _mean(current, "clap_local"),
            "latency_p95_s": _quantile(current, "latency_s", 0.95),
            "votes": votes,
            "stream": stream,
        },
    )
    write_prometheus(n_tests, failed, len(current), stream)
    if not failed:
        log.info("monitor: all %d tests passed (%s)", n_tests, REPORT)
        return
    message = f"{len(failed)} of {n_tests} tests failed ({REPORT}): " + "; ".join(failed)
    if mp.fail_on_drift:
        raise MonitorAlert(message)
    log.warning("monitor: %s (reported; monitor.fail_on_drift makes this exit 1)", message)


def stream_stats(segments: pd.DataFrame, mp: MonitorParams) -> dict:
    """The radio in the window: segments played, minutes listened, votes per minute listened (all votes in
    the window: the votes table does not say whether a vote was on a segment or a take)."""
    from bayes_beats.api.listeners import read_votes

    minutes = float(segments["duration_s"].sum()) / 60 if len(segments) else 0.0
    location = log_location(mp)
    # a CSV export has no votes: unknown (None), not zero; a database that never got feedback has none: 0
    if location.endswith(".csv") or not minutes:
        per_minute = None
    else:
        votes = read_votes(location, since_hours=mp.window_hours or None)
        per_minute = round((0 if votes is None else len(votes)) / minutes, 4)
    return {"segments": len(segments), "minutes_listened": round(minutes, 2), "votes_per_minute_listened": per_minute}


def write_prometheus(n_tests: int, failed: list[str], requests: int, stream: dict | None = None) -> None:
    """The verdict as gauges, for Prometheus (node-exporter's textfile collector, or a Pushgateway)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    gauges = {
        "tests": (n_tests, "Monitoring tests run on the request log"),
        "tests_failed": (len(failed), "Monitoring tests that failed (drift, CLAP floor, latency, OOV, like-rate)"),
        "drift_detected": (int(any("Drifted" in f for f in failed)), "1 when the drifted-columns test failed"),
        "requests": (requests, "Requests in the monitored window"),
        "last_run_timestamp_seconds": (datetime.now(UTC).timestamp(), "When the monitor last ran"),
        "stream_minutes_listened": ((stream or {}).get("minutes_listened") or 0, "Minutes of radio in the window"),
        "stream_votes_per_minute": (
            _or_nan((stream or {}).get("votes_per_minute_listened")),
            "Votes per minute of radio listened in the window (NaN: unknown, a CSV log has no votes)",
        ),
    }
    for name, (value, help_text) in gauges.items():
        Gauge(f"bayes_beats_monitor_{name}", help_text, registry=registry).set(value)
    paths.MONITOR_PROM.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(paths.MONITOR_PROM), registry)  # writes a temp file and renames it: atomic


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _empty(frame: pd.DataFrame, column: str) -> bool:
    return column not in frame or frame[column].isna().all()


def _mean(frame: pd.DataFrame, column: str) -> float | None:
    return round(float(frame[column].mean()), 4) if column in frame and frame[column].notna().any() else None


def _quantile(frame: pd.DataFrame, column: str, q: float) -> float | None:
    return round(float(frame[column].quantile(q)), 4) if column in frame and frame[column].notna().any() else None
