"""Serving throughput with BentoML adaptive batching on vs off, side by side in one run: a real
`bentoml serve` of the registry's champion on loopback, 8 concurrent async clients, 10-s generations.

    python bench/serve_bench.py            # → prints JSON; bench/run.py stores it in bench/results.json"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROMPTS = [
    "a calm lake at dawn, soft and peaceful",
    "neon city night, fast and exciting",
    "rainy window, grey and lonely",
    "sunny beach with friends, joyful",
    "storm over the mountains, tense and dark",
    "a quiet forest path, dreamy",
    "festival crowd dancing, euphoric",
    "empty station at midnight, melancholic",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(max_batch: int | None, request_log: str | None = None) -> tuple[subprocess.Popen, str]:
    """`bentoml serve` of the champion; max_batch None: the service's own default (8 on a GPU, unbatched on CPU)."""
    port = free_port()
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "BAYES_BEATS_MODEL_URI": "models:/bayes-beats@champion",
        "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{REPO}/mlflow.db"),
        **({"BAYES_BEATS_MAX_BATCH": str(max_batch)} if max_batch is not None else {}),
        "BAYES_BEATS_CLAP_DIR": str(REPO / "models" / "clap"),  # the request log scores, as in production
        "BAYES_BEATS_REQUEST_LOG": request_log or str(tmp / f"bayes-beats-bench-{port}.sqlite"),
    }
    proc = subprocess.Popen(
        [str(BIN / "bentoml"), "serve", "service:BayesBeats", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO / "serving",
        env=env,
        stdout=open(tmp / f"bayes-beats-bench-{port}.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(360):
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}")
        try:
            if urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise TimeoutError("service did not get ready")


async def load(url: str, clients: int, requests: int, seconds: float, prompts: list[str] = PROMPTS) -> dict:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(4):
        queue.put_nowait(i)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            i = queue.get_nowait()
            body = {"prompt": prompts[i % len(prompts)], "duration_s": seconds, "seed": i}
            start = time.perf_counter()
            r = await http.post(f"{url}/generate", json=body)
            latencies.append(time.perf_counter() - start)
            errors += r.status_code != 200

    async with httpx.AsyncClient(timeout=300) as http:
        await asyncio.gather(*(client(http) for _ in range(2)))  # warm-up: 4 requests
        latencies.clear()
        errors = 0
        for i in range(requests):
            queue.put_nowait(i)
        began = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - began
    return {
        "requests": requests,
        "errors": errors,
        "requests_per_s": round(requests / wall, 3),
        "audio_seconds_per_s": round(requests * seconds / wall, 2),
        "p50_s": round(float(np.percentile(latencies, 50)), 3),
        "p95_s": round(float(np.percentile(latencies, 95)), 3),
    }


def main(clients: int = 8, requests: int = 64, seconds: float = 10.0) -> dict:
    out: dict = {"clients": clients, "seconds_of_audio": seconds}
    for name, max_batch in (("batched", 8), ("unbatched", 1)):
        proc, url = start(max_batch)
        try:
            out[name] = asyncio.run(load(url, clients, requests, seconds))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    out["throughput_ratio"] = round(out["batched"]["requests_per_s"] / out["unbatched"]["requests_per_s"], 2)
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
