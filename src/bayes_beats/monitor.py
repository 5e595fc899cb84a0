"""`monitor`: are the requests the service gets, and what it answers, still like the evaluation set?

Evidently report + tests on the request log (bayes_beats.api.requestlog) against the reference that the
`evaluate` stage writes (the fine-tuned model's eval generations in the log's columns): drift of prompt
descriptors (length, words, out-of-vocabulary rate against the training captions) and of the audio's
features (bpm, mode, loudness, brightness, onset rate, clap_local), plus floors and ceilings on the
CLAP score, latency and OOV rate. Writes reports/monitor.html + .json and metrics/monitor.json; exits 1
when a test fails, so the Kubernetes CronJob alerts by its exit status."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from bayes_beats.api.requestlog import prompt_words, read_requests
from bayes_beats.core import paths
from bayes_beats.core.atomic import atomic_path, write_json
from bayes_beats.core.config import MonitorParams, Params

log = logging.getLogger(__name__)
REPORT = paths.MONITOR_REPORT
REFERENCE = paths.EVAL_REQUESTS
VOCABULARY = paths.EVAL_VOCABULARY
AUDIO_COLUMNS = ["bpm", "loudness_lufs", "centroid_hz", "onset_rate", "clap_local"]
PROMPT_COLUMNS = ["prompt_chars", "prompt_words", "oov_pct"]


class MonitorAlert(Exception):
    """A monitoring test failed: the message names which; the exit status is 1."""


def load_current(mp: MonitorParams) -> pd.DataFrame:
    """The request log (SQLite path or SQLAlchemy URL; `env:NAME` reads it from that environment variable,
    so a database password stays out of params and logs) or a CSV export of it."""
    location = mp.requests
    if location.startswith("env:"):
        location = os.environ.get(location.removeprefix("env:"), "")
        if not location:
            raise FileNotFoundError(f"monitor.requests is {mp.requests} but that variable is not set")
    if location.endswith(".csv"):
        if not Path(location).is_file():
            raise FileNotFoundError(f"no request sample at {location}")
        return pd.read_csv(location)
    return read_requests(location, mp.window_hours or None)


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
            raise FileNotFoundError(f"{path} missing: it comes from the evaluate stage (`dvc repro evaluate`)")
    vocabulary = set(VOCABULARY.read_text().split())
    reference = pd.read_csv(REFERENCE)
    current = load_current(mp)
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
    write_json(
        paths.MONITOR_METRICS,
        {
            "requests": len(current),
            "reference": len(reference),
            "tests": len(tests),
            "failed": len(failed),
            "failures": failed,
            "unmeasured": sorted(unmeasured),
            "clap_local_mean": _mean(current, "clap_local"),
            "latency_p95_s": _quantile(current, "latency_s", 0.95),
        },
    )
    if failed:
        raise MonitorAlert(f"{len(failed)} of {len(tests)} tests failed ({REPORT}): " + "; ".join(failed))
    log.info("monitor: all %d tests passed (%s)", len(tests), REPORT)


def _empty(frame: pd.DataFrame, column: str) -> bool:
    return column not in frame or frame[column].isna().all()


def _mean(frame: pd.DataFrame, column: str) -> float | None:
    return round(float(frame[column].mean()), 4) if column in frame and frame[column].notna().any() else None


def _quantile(frame: pd.DataFrame, column: str, q: float) -> float | None:
    return round(float(frame[column].quantile(q)), 4) if column in frame and frame[column].notna().any() else None
