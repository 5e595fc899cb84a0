"""Fault tolerance end to end: a stage killed mid-write, GCS that fails and stalls, SIGTERM with requests
in flight, and (marker `soak`, `make soak`) the service under a long loopback load. Kill -9 during
`finetune` and a lost MLflow server are in test_train.py and test_tracking.py."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from conftest import BIN, TINY, champion_env, copy_repo, params_with, start_service, stop_service

# ---- a stage killed mid-run


def pipeline_copy(dst: Path, synth_corpus: Path) -> Path:
    repo = copy_repo(dst)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in {**TINY, "data": {"source": "jamendo", "path": str(synth_corpus)}}.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    return repo


def dvc(repo: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db"}
    return subprocess.Popen(
        [str(BIN / "dvc"), *args],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def locked_outs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}


@pytest.mark.slow
def test_kill_9_in_any_data_stage_then_repro_completes_with_the_same_outputs(synth_corpus, tmp_path):
    target = "dataset"  # sample → features → labels → dataset
    straight = pipeline_copy(tmp_path / "straight", synth_corpus)
    done = dvc(straight, "repro", target)
    assert done.wait(900) == 0, done.stdout.read()[-3000:]

    killed = pipeline_copy(tmp_path / "killed", synth_corpus)
    for stage in ("sample", "features", "labels", "dataset"):
        proc = dvc(killed, "repro", target)
        for line in proc.stdout:  # kill the whole process tree once the stage is running
            if f"Running stage '{stage}'" in line:
                time.sleep(0.5 if stage in ("sample", "features") else 0.1)
                break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    rerun = dvc(killed, "repro", target)
    out = rerun.communicate(timeout=900)[0]
    assert rerun.returncode == 0, out[-3000:]
    status = dvc(killed, "status", target).communicate(timeout=120)[0]
    assert "up to date" in status, status
    assert locked_outs(killed) == locked_outs(straight)  # the same bytes as a run never interrupted
    assert not [p for p in (killed / "data").rglob("*.tmp")]  # no temp file left inside an output


# ---- GCS that fails and stalls


class FlakyProxy(ThreadingHTTPServer):
    """Loopback proxy in front of the GCS emulator: every 3rd request gets a 503, every 7th stalls
    past the client's timeout before it is answered."""

    daemon_threads = True

    def __init__(self, upstream: str, stall_s: float):
        self.upstream = upstream.removeprefix("http://")
        self.stall_s = stall_s
        self.seen = self.failed = self.stalled = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), ProxyHandler)


class ProxyHandler(BaseHTTPRequestHandler):
    server: FlakyProxy

    def log_message(self, *args) -> None:
        pass

    def _handle(self) -> None:
        with self.server.lock:
            self.server.seen += 1
            n = self.server.seen
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        if n % 3 == 0:
            with self.server.lock:
                self.server.failed += 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if n % 7 == 0:
            with self.server.lock:
                self.server.stalled += 1
            time.sleep(self.server.stall_s)
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


@pytest.mark.gcs
def test_sampling_from_a_bucket_survives_5xx_and_stalls(bucket, gcs_emulator, workdir, monkeypatch):
    from bayes_beats import sample

    proxy = FlakyProxy(gcs_emulator, stall_s=3.0)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{proxy.server_address[1]}")
        data = {"source": "gcs", "path": f"gs://{bucket.name}/mood", "cache_dir": "cache", "gcs_timeout_s": 1.0}
        sample.run(params_with(data=data, sample={"n_tracks": 8}))
    finally:
        proxy.shutdown()
    cached = [p for p in (workdir / "cache").rglob("*") if p.is_file()]
    assert len(cached) == 8 and not [p for p in cached if p.name.endswith(".part")]
    assert proxy.failed >= 3 and proxy.stalled >= 1  # the faults happened and were retried through


# ---- the service: SIGTERM with requests in flight, and a long load


def generate_concurrently(url: str, n: int, seconds: float, images: int = 0) -> list[int]:
    """`n` text requests to /generate and `images` big PNGs to /generate_from_image, all at once."""
    photo = big_png() if images else b""

    async def one(http: httpx.AsyncClient, i: int) -> int:
        if i >= n:  # the API decodes the image (two at a time) before it calls the renderer
            files = {"image": ("big.png", photo, "image/png")}
            r = await http.post(f"{url}/generate_from_image", files=files, data={"duration_s": "2"}, timeout=120)
            return r.status_code
        body = {"prompt": f"storm over the sea {i}", "duration_s": seconds, "seed": i}
        return (await http.post(f"{url}/generate", json=body, timeout=120)).status_code

    async def all_of_them() -> list[int]:
        async with httpx.AsyncClient() as http:
            return await asyncio.gather(*(one(http, i) for i in range(n + images)))

    return asyncio.run(all_of_them())


def big_png() -> bytes:
    """A 4800 × 3300 PNG (≈ 16 megapixels, fully decoded by the API: a fraction of a second each), 2 MB."""
    import io

    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:3300, 0:4800]
    rgb = np.stack([x * 255 // 4800, y * 255 // 3300, (x + y) * 255 // 8100], axis=-1).astype(np.uint8)
    rgb[::7, ::5] ^= 17
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@pytest.mark.serving
def test_sigterm_lets_in_flight_requests_finish(registry, tmp_path):
    """SIGTERM (what Kubernetes and `podman stop` send to PID 1) the moment the API holds ten requests, none
    answered: six /generate (a fresh API first asks the renderer for its limits, then renders) and four
    /generate_from_image whose big images the API is still decoding, two at a time, so their calls to the
    renderer come after the SIGTERM. The API stops accepting and drains, the renderer serves until the API
    is gone: all ten get their audio, and the server exits cleanly."""
    texts, images = 6, 4
    proc, url, log = start_service(tmp_path, champion_env(registry))
    results: list[int] = []
    worker = threading.Thread(target=lambda: results.extend(generate_concurrently(url, texts, 10.0, images)))
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        _in_progress(url, "/generate") < texts or _in_progress(url, "/generate_from_image") < images
    ):
        time.sleep(0.02)
    at_renderer = _in_progress(url, "/render")
    held = _in_progress(url, "/generate") + _in_progress(url, "/generate_from_image")
    # all ten at the API, some not yet at the renderer; on a loaded machine a fast /generate may already be
    # answered (the images decode slowly): what matters is that every request the API holds is answered
    assert held >= texts + images - 2 and not results and at_renderer < held
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    worker.join(120)
    answered = time.monotonic() - sent
    try:
        code = proc.wait(60)
    finally:
        stop_service(proc, log, grace=5)
    print(
        f"SIGTERM with {texts + images} requests at the API, {at_renderer:.0f} of them at the renderer: "
        f"all answered after {answered:.1f} s, exit after {time.monotonic() - sent:.1f} s"
    )
    assert results == [200] * (texts + images), results
    assert code == 0


def _in_progress(url: str, endpoint: str) -> float:
    """Requests to `endpoint` (/generate: the API's, /render: the renderer's) being handled now, from
    BentoML's Prometheus gauge (the API's /metrics aggregates every worker's)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("bentoml_service_request_in_progress") and f'endpoint="{endpoint}"' in line
    )


def tree_rss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 1e6


@pytest.mark.soak
@pytest.mark.serving
def test_soak_8_clients_no_errors_and_flat_memory(registry, clap_dir, tmp_path):
    seconds = float(os.environ.get("BAYES_BEATS_SOAK_S", "600"))
    proc, url, log = start_service(tmp_path, champion_env(registry, BAYES_BEATS_CLAP_DIR=str(clap_dir)))
    latencies: list[float] = []
    errors: list[str] = []
    rss: list[tuple[float, float]] = []
    start = time.monotonic()

    async def client(http: httpx.AsyncClient, c: int) -> None:
        i = 0
        while time.monotonic() - start < seconds:
            body = {"prompt": f"soak test vibe {c}: warm evening {i % 5}", "duration_s": 10.0, "seed": i}
            t0 = time.monotonic()
            try:
                r = await http.post(f"{url}/generate", json=body, timeout=120)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
            except httpx.HTTPError as err:
                errors.append(repr(err))
            latencies.append(time.monotonic() - t0)
            i += 1

    async def sampler() -> None:
        while time.monotonic() - start < seconds:
            rss.append((time.monotonic() - start, tree_rss_mb(proc.pid)))
            await asyncio.sleep(5)

    async def main() -> None:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=16)) as http:
            await asyncio.gather(sampler(), *(client(http, c) for c in range(8)))

    try:
        asyncio.run(main())
    finally:
        code = stop_service(proc, log)
    warm = [m for t, m in rss if t >= seconds * 0.2]  # after warm-up: allocator pools and caches filled
    growth = (max(warm[len(warm) // 2 :]) - warm[0]) / warm[0]
    summary = {
        "seconds": seconds,
        "clients": 8,
        "requests": len(latencies),
        "errors": len(errors),
        "p50_s": round(sorted(latencies)[len(latencies) // 2], 3),
        "p95_s": round(sorted(latencies)[int(len(latencies) * 0.95)], 3),
        "rss_mb_after_warmup": round(warm[0], 1),
        "rss_mb_max_second_half": round(max(warm[len(warm) // 2 :]), 1),
        "rss_growth": round(growth, 4),
        "exit_code": code,
    }
    if os.environ.get("BAYES_BEATS_SOAK_OUT"):
        Path(os.environ["BAYES_BEATS_SOAK_OUT"]).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    assert not errors, errors[:5]
    assert growth < 0.10, summary
    assert code == 0
