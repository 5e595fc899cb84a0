"""The service's request log: one row per generation — the prompt and its descriptors, the image's
valence/arousal, what the generated audio measures (bpm, mode, loudness, brightness), its clap_local
score, latency, model version — in SQLite locally or Postgres/Cloud SQL in production (any SQLAlchemy URL).

Off the request's critical path: `record()` only puts the request on a bounded queue and returns; a
daemon thread has the audio measured and writes the row. Measuring (librosa, CLAP) runs in a process of its
own at the lowest priority: on a niced thread of the API process it held the GIL the event loop needs while
it waited for a core, and every stream the process served stalled behind it (docs/design.md "The stream"). When the queue is full the row is dropped and
counted, when the database is slow or broken the row is counted as failed: a request never waits for,
nor fails because of, its log. The counts are the Prometheus counter `bayes_beats_request_log_rows_total`
{outcome="recorded"|"dropped"|"failed"} on the service's /metrics. `bayes-beats monitor` reads the table
back (`read_requests`)."""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from bayes_beats.core.config import FeaturesParams, load_params
from bayes_beats.music.theory import prompt_words

log = logging.getLogger(__name__)
TABLE = "requests"
MEASURE_EVERY = 6  # a stream's segments: one in six measured (features, CLAP), so scoring leaves the CPU to
# rendering; every segment is logged

metadata = sa.MetaData()
requests_table = sa.Table(
    TABLE,
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("model_version", sa.String(200), nullable=False),
    sa.Column("prompt", sa.String(1000), nullable=False),
    sa.Column("prompt_chars", sa.Integer, nullable=False),
    sa.Column("prompt_words", sa.Integer, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("num_variations", sa.Integer, nullable=False),
    sa.Column("temperature", sa.Float, nullable=False),
    sa.Column("valence", sa.Float),  # from the image's vibe; NULL for text requests
    sa.Column("arousal", sa.Float),
    sa.Column("planned_bpm", sa.Float),
    sa.Column("planned_keyscale", sa.String(16)),
    sa.Column("bpm", sa.Float),  # measured on the generated audio (the first variation)
    sa.Column("mode", sa.String(8)),
    sa.Column("loudness_lufs", sa.Float),
    sa.Column("centroid_hz", sa.Float),  # brightness
    sa.Column("onset_rate", sa.Float),
    sa.Column("clap_local", sa.Float),  # NULL when the service has no CLAP model
    sa.Column("latency_s", sa.Float, nullable=False),
)


_ROWS: Any = None
_ROWS_LOCK = threading.Lock()
OUTCOMES = ("recorded", "dropped", "failed")
# Measuring a row (librosa features, a CLAP score) costs CPU the serving needs: about 0.2-0.3 CPU-s a 10-s clip,
# a third of what rendering it costs on CPU, more than rendering on a GPU. The measuring process runs at the
# lowest priority, and the service bounds it, measure_share=MEASURE_SHARE of one core: a row that took t
# CPU-seconds to measure is followed by t / share seconds of rows written unmeasured (logged, not scored): a
# sample under load, every row when requests come further apart than that. (On 2 CPU cores, measured side by
# side, served /generate ran no faster with the log off: docs/design.md "Served /generate".)
MEASURE_SHARE = 0.05


def rows_counter() -> Any:
    """The process's Prometheus counter of request-log rows by outcome. Created on first use, not at
    import: under `bentoml serve` prometheus_client must see PROMETHEUS_MULTIPROC_DIR (set for the workers)
    so that the counts land in the files BentoML's /metrics aggregates across worker processes."""
    global _ROWS
    with _ROWS_LOCK:
        if _ROWS is None:
            from prometheus_client import Counter

            _ROWS = Counter(
                "bayes_beats_request_log_rows",
                "Request-log rows: recorded, dropped (queue full) or failed (database error), by outcome",
                ["outcome"],
            )
            for outcome in OUTCOMES:
                _ROWS.labels(outcome=outcome)  # every series from zero: a first failure shows as an increase
    return _ROWS


def database_url(location: str) -> str:
    """A SQLAlchemy URL as is, or a file path → a SQLite URL."""
    if "://" in location:
        return location
    return f"sqlite:///{Path(location).expanduser().resolve()}"


def open_engine(url: str, timeout_s: float) -> sa.Engine:
    """The engine for the request log's database (its votes table too): a SQLite file's folder made and
    its lock wait bounded; a server's connections checked before use and their waits bounded."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(url, connect_args={"timeout": timeout_s})
    return sa.create_engine(
        url, pool_pre_ping=True, pool_timeout=timeout_s, connect_args={"connect_timeout": max(1, int(timeout_s))}
    )


@dataclass
class Generation:
    """What the API knows when a generation is done; the worker adds what the audio measures."""

    endpoint: str
    model_version: str
    prompt: str
    duration_s: float
    num_variations: int
    temperature: float
    latency_s: float
    wav: bytes  # the first variation
    planned_bpm: float | None = None
    planned_keyscale: str | None = None
    valence: float | None = None
    arousal: float | None = None
    measured: bool = True  # False: logged, not measured (a stream's segments between samples: the CPU renders)
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of(cls, endpoint: str, request: Any, rendered: Any, latency_s: float, vibe: Any = None) -> Generation:
        """From the API's RenderRequest, the renderer's Rendered and the image's Vibe (api.schemas, imagevibe)."""
        import base64

        return cls(
            endpoint=endpoint,
            model_version=rendered.model_version,
            prompt=request.prompt,
            duration_s=request.duration_s,
            num_variations=request.num_variations,
            temperature=request.temperature,
            latency_s=latency_s,
            wav=base64.b64decode(rendered.wavs[0]),
            planned_bpm=rendered.bpm[0],
            planned_keyscale=rendered.keyscale[0],
            valence=vibe.valence if vibe else None,
            arousal=vibe.arousal if vibe else None,
        )

    @classmethod
    def of_segment(
        cls,
        model_version: str,
        prompt: str,
        temperature: float,
        segment: Any,
        wav: bytes,
        latency_s: float,
        vibe: dict | None = None,
    ) -> Generation:
        """One radio segment's row: `segment` has index, duration_s, bpm and keyscale (the API's Playing or the
        radio's Segment); every segment is logged, one in MEASURE_EVERY measured."""
        vibe = vibe or {}
        return cls(
            endpoint="stream",
            model_version=model_version,
            prompt=prompt,
            duration_s=segment.duration_s,
            num_variations=1,
            temperature=temperature,
            latency_s=latency_s,
            wav=wav,
            planned_bpm=segment.bpm,
            planned_keyscale=segment.keyscale,
            valence=vibe.get("valence"),
            arousal=vibe.get("arousal"),
            measured=segment.index % MEASURE_EVERY == 0,
        )


class RequestLog:
    def __init__(
        self,
        location: str,
        clap_dir: str | None = None,
        max_queue: int = 256,
        timeout_s: float = 5.0,
        features: FeaturesParams | None = None,
        measure_share: float | None = None,
    ):
        self.url = database_url(location)
        self.clap_dir = clap_dir or None
        self.timeout_s = timeout_s
        # how the audio is measured: the features stage's settings, which a Bento records (`package`); without
        # them (the service from source, `traffic`, tests) the workspace's params.yaml, read on first use
        self.features = features
        if measure_share is not None and not 0 < measure_share <= 1:
            raise ValueError(f"measure_share must be in (0, 1], not {measure_share}")
        self.measure_share = measure_share  # None: every row is measured (the traffic stage, tests)
        self._measure_after = 0.0  # time.monotonic() before which rows are written unmeasured
        self._warm = False  # the first measured row carries one-time costs (numba compiling librosa's kernels)
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self._rows = rows_counter()
        self._queue: queue.Queue[Generation | None] = queue.Queue(max_queue)
        self._engine: sa.Engine | None = None
        self._measurer: ProcessPoolExecutor | None = None  # started on the first row
        self._thread = threading.Thread(target=self._work, name="request-log", daemon=True)
        self._thread.start()

    def record(self, generation: Generation) -> bool:
        """Queue a row; never blocks. False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(generation)
            return True
        except queue.Full:
            self._count("dropped")
            return False

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self._rows.labels(outcome=outcome).inc()

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued (up to `timeout_s`), then stop the worker."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)
        if self._measurer is not None:
            self._measurer.shutdown(cancel_futures=True)

    def _connect(self) -> sa.Engine:
        if self._engine is None:
            engine = open_engine(self.url, self.timeout_s)
            metadata.create_all(engine)
            self._engine = engine
        return self._engine

    def _work(self) -> None:
        while (generation := self._queue.get()) is not None:
            try:
                if self.measure_share is not None and time.monotonic() < self._measure_after:
                    generation.measured = False
                row, measuring_s = self.measure(generation)
                if self.measure_share is not None and generation.measured:
                    if self._warm:
                        self._measure_after = time.monotonic() + measuring_s / self.measure_share
                    self._warm = True
                with self._connect().begin() as connection:
                    connection.execute(requests_table.insert(), [row])
                self._count("recorded")
            except Exception as err:  # a log that cannot write must not take the service down
                self._count("failed")
                if self.counts["failed"] in (1, 10, 100) or self.counts["failed"] % 1000 == 0:
                    log.warning("request log %s: %d rows failed, last: %s", self.url, self.counts["failed"], err)

    def measure(self, g: Generation) -> tuple[dict, float]:
        """The row (what the API knew and what the audio measures) and the CPU-seconds measuring it took, in
        the measuring process."""
        if self._measurer is None:
            # spawn, not fork: the API process has threads (uvicorn's, torch's) a fork would copy mid-state
            self._measurer = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_measuring,
                initargs=(self.features, self.clap_dir),
            )
        try:
            return self._measurer.submit(_measure, g).result()
        except BrokenProcessPool:  # the measuring process died (killed, out of memory): a new one next row
            self._measurer = None
            raise


_MEASURING: dict[str, Any] = {}  # in the measuring process: the features settings and the CLAP scorer


def _start_measuring(features: FeaturesParams | None, clap_dir: str | None) -> None:
    with contextlib.suppress(OSError):
        os.nice(19)  # the cores serve first
    import torch

    torch.set_num_threads(1)
    _MEASURING.update(features=features or load_params().features, clap_dir=clap_dir, scorer=None)


def _measure(g: Generation) -> tuple[dict, float]:
    import soundfile as sf

    from bayes_beats.music.analysis import extract

    if _MEASURING["clap_dir"] and g.measured and _MEASURING["scorer"] is None:  # loaded once, not on the budget
        from bayes_beats.model.scoring import LocalClapScorer

        _MEASURING["scorer"] = LocalClapScorer(_MEASURING["clap_dir"])
    started = time.process_time()
    audio, sr = sf.read(io.BytesIO(g.wav), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    feats = extract(mono, sr, _MEASURING["features"]) if g.measured and np.any(mono) else {}
    clap = None
    if _MEASURING["scorer"] is not None and g.measured:
        from bayes_beats.model.scoring import clap_scores

        clap = float(clap_scores(_MEASURING["scorer"], [g.prompt], [audio.T], sr)[0])
    row = {
        "ts": g.ts,
        "endpoint": g.endpoint,
        "model_version": g.model_version[:200],
        "prompt": g.prompt[:1000],
        "prompt_chars": len(g.prompt),
        "prompt_words": len(prompt_words(g.prompt)),
        "duration_s": g.duration_s,
        "num_variations": g.num_variations,
        "temperature": g.temperature,
        "valence": g.valence,
        "arousal": g.arousal,
        "planned_bpm": g.planned_bpm,
        "planned_keyscale": g.planned_keyscale,
        "bpm": feats.get("bpm"),
        "mode": feats.get("mode"),
        "loudness_lufs": _finite(feats.get("loudness_lufs")),
        "centroid_hz": feats.get("centroid_hz"),
        "onset_rate": feats.get("onset_rate"),
        "clap_local": clap,
        "latency_s": g.latency_s,
    }
    return row, time.process_time() - started


def _finite(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None  # silence measures −inf LUFS


@contextlib.contextmanager
def reading(location: str) -> Iterator[sa.Engine]:
    """A short-lived engine on the log's database for one read (the monitor's); FileNotFoundError for a
    SQLite file that is not there (a reader never creates the database)."""
    url = database_url(location)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise FileNotFoundError(f"no request log at {url.removeprefix('sqlite:///')}")
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def read_requests(location: str, since_hours: float | None = None) -> pd.DataFrame:
    """The logged requests (all, or those of the last `since_hours`), oldest first."""
    query = sa.select(requests_table).order_by(requests_table.c.ts)
    if since_hours is not None:
        cutoff = datetime.now(UTC).timestamp() - since_hours * 3600
        query = query.where(requests_table.c.ts >= datetime.fromtimestamp(cutoff, UTC))
    with reading(location) as engine, engine.connect() as connection:
        return pd.read_sql(query, connection)
