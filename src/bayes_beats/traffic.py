"""`traffic`: the requests `monitor` compares, drawn so that its checks mean something.

A drift check is only as good as its two samples. Both come from one draw here: the fine-tuned model
answers prompts from the population the page sends (the dataset's held-out test captions, free-text
scene captions and typed vibes, never used to fit anything) at the service's defaults (one take,
`plans.DEFAULT_TEMPERATURE`, a new seed per request), and every answer goes through the service's own
request-log code (`api.requestlog.RequestLog`: the same features, CLAP score and columns as production
rows). The requests are shuffled with a seed and split: `reference_share` of them are the reference
(what healthy traffic looks like for this model), the rest the demo's sample traffic. So a clean sample
differs from its reference only by sampling, and a drift flag on it is a false alarm the demo would show;
`tests/test_monitor.py` shows the same checks flag a drifted sample. In production the reference stays
and the sample is the service's log (`monitor.requests`).

The sample also holds `streams` radio listeners of `stream_seconds` each (the radio's own `model.radio.Radio`,
each segment's row the service's `Generation.of_segment`), so the demo's monitor report
shows the radio's figures; they go to the sample only, as the monitor keeps them out of the drift tests."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from tqdm import tqdm

from bayes_beats.api.requestlog import Generation, RequestLog, read_requests
from bayes_beats.core import paths
from bayes_beats.core.atomic import atomic_dir
from bayes_beats.core.config import Params, StreamParams
from bayes_beats.model.plans import DEFAULT_TEMPERATURE
from bayes_beats.music.audio import wav_bytes

log = logging.getLogger(__name__)
BATCH = 8  # requests per pipeline call, as the service's adaptive batching groups concurrent clients


def prompt_pool() -> list[str]:
    """Held-out captions interleaved with scene captions and typed vibes: what people send."""
    test = datasets.load_from_disk(str(paths.DATASET))["test"]["prompt"]
    resources = files("bayes_beats").joinpath("resources")
    free = [
        c["prompt"]
        for name in ("scene_captions.json", "vibe_prompts.json")
        for c in json.loads(resources.joinpath(name).read_text())
    ]
    pool = [p for pair in zip(test, free * (len(test) // max(len(free), 1) + 1), strict=False) for p in pair]
    return pool + free[len(test) :]


def run(params: Params) -> None:
    from bayes_beats.model.generate import load_generator

    tp = params.traffic
    rng = np.random.default_rng(tp.seed)
    pool = prompt_pool()
    prompts = [pool[i] for i in rng.choice(len(pool), tp.requests, replace=tp.requests > len(pool))]
    gen = load_generator(str(paths.FINETUNED))
    with tempfile.TemporaryDirectory() as tmp:
        request_log = RequestLog(
            str(Path(tmp) / "requests.sqlite"),
            clap_dir=str(paths.CLAP),
            max_queue=tp.requests + tp.streams * int(tp.stream_seconds),  # a segment is over 1 s
            features=params.features,
        )
        for start in tqdm(range(0, len(prompts), BATCH), desc="traffic", unit="batch"):
            batch = prompts[start : start + BATCH]
            seeds = [tp.seed * 100_003 + start + i for i in range(len(batch))]
            began = time.perf_counter()
            audio, plans = gen.generate_with_plans(batch, tp.seconds, seeds, temperature=DEFAULT_TEMPERATURE)
            latency = time.perf_counter() - began
            for prompt, takes, plan in zip(batch, audio, plans, strict=True):
                request_log.record(
                    Generation(
                        endpoint="generate",
                        model_version=str(paths.FINETUNED),
                        prompt=prompt,
                        duration_s=tp.seconds,
                        num_variations=1,
                        temperature=DEFAULT_TEMPERATURE,
                        latency_s=latency,
                        wav=wav_bytes(takes[0], gen.sample_rate),
                        planned_bpm=plan["bpm"],
                        planned_keyscale=plan["keyscale"],
                    )
                )
        segments = sum(
            listen(gen, params.stream, request_log, prompts[i % len(prompts)], tp.seed + i, tp.stream_seconds)
            for i in range(tp.streams)
        )
        request_log.close(timeout_s=600)
        if request_log.counts["recorded"] != len(prompts) + segments:
            raise RuntimeError(f"traffic: the request log kept {request_log.counts} of {len(prompts) + segments} rows")
        rows = read_requests(str(Path(tmp) / "requests.sqlite")).drop(columns=["id"])
    streamed = rows[rows["endpoint"] == "stream"]
    rows = rows[rows["endpoint"] != "stream"]
    order = rng.permutation(len(rows))
    cut = round(tp.reference_share * len(rows))
    with atomic_dir(paths.TRAFFIC) as out:
        rows.iloc[np.sort(order[:cut])].to_csv(out / paths.TRAFFIC_REFERENCE.name, index=False)
        sample = pd.concat([rows.iloc[np.sort(order[cut:])], streamed])
        sample.to_csv(out / paths.TRAFFIC_SAMPLE.name, index=False)
    log.info(
        "traffic: %d reference and %d sample requests, %d stream segments in %s",
        cut, len(rows) - cut, len(streamed), paths.TRAFFIC,
    )  # fmt: skip


def listen(gen, settings: StreamParams, request_log: RequestLog, prompt: str, seed: int, seconds: float) -> int:
    """One listener of the radio until `seconds` are played, each segment logged as the service logs it."""
    from bayes_beats.model.radio import Cursor, Radio

    radio = Radio(gen, settings)
    cursor, played, index = Cursor(prompt, seed, DEFAULT_TEMPERATURE), 0.0, 0
    while played < seconds:
        began = time.perf_counter()
        segment = radio.render([cursor], [None])[0]
        wav = wav_bytes(segment.audio[None, :], segment.sample_rate)
        latency_s = time.perf_counter() - began
        request_log.record(
            Generation.of_segment(str(paths.FINETUNED), prompt, DEFAULT_TEMPERATURE, segment, wav, latency_s)
        )
        if segment.cursor is None:  # the radio hands on where the stream is; without it nothing continues
            raise RuntimeError(f"traffic: the radio returned no cursor after segment {segment.index}")
        cursor, played, index = segment.cursor, played + segment.duration_s, index + 1
    return index
