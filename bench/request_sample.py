"""The committed request sample behind the `monitor` stage: real requests to a real `bentoml serve` of the
registry's champion (8 concurrent clients, 10-s generations), read back from its request log.

Prompts are what users of the page send: the dataset's held-out test captions and free-form scene
captions, each with a new seed — the same population as the evaluation set, so the stage's tests pass on
it, while tests/test_monitor.py shows they fail on drifted requests.

    python bench/request_sample.py [n_requests]   # → monitoring/requests_sample.csv"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import datasets
from serve_bench import REPO, load, start

from bayes_beats.api.requestlog import read_requests
from bayes_beats.core.atomic import atomic_path
from bayes_beats.evaluate import scene_captions

OUT = REPO / "monitoring" / "requests_sample.csv"


def prompts() -> list[str]:
    test = datasets.load_from_disk(str(REPO / "data" / "dataset"))["test"]["prompt"]
    scenes = [c["prompt"] for c in scene_captions()]
    return [p for pair in zip(test, scenes * (len(test) // len(scenes) + 1), strict=False) for p in pair]  # interleaved


def main(n_requests: int = 160) -> dict:
    log_path = Path(tempfile.mkdtemp()) / "requests.sqlite"
    proc, url = start(8, request_log=str(log_path))
    try:
        stats = asyncio.run(load(url, 8, n_requests, 10.0, prompts()))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the service flushes its request log on shutdown
        proc.wait(120)
    rows = read_requests(str(log_path))
    with atomic_path(OUT) as tmp:
        rows.drop(columns=["id"]).to_csv(tmp, index=False)
    return {"logged": len(rows), **stats}


if __name__ == "__main__":
    print(json.dumps(main(*map(int, sys.argv[1:])), indent=2))
