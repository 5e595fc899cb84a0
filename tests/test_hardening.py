"""The service under hostile clients (issue G, item 9): each finding of the loopback probe of `make serve`
as a test, most of them against a real `bentoml serve` (with an API key, as deployed), the rest in-process.

Findings → tests: server-side request forgery through a non-file `image` → test_only_real_file_uploads_*;
slow bodies exhausting the concurrency limit → test_slow_bodies_*; a client leaving mid-body →
test_a_client_leaving_mid_body_*, test_sigterm_*; /metrics labelled by raw path → test_metrics_*;
500s where a 4xx belongs, NaN vibes, invisible prompt characters, 4xx tracebacks → test_client_mistakes_*,
test_tiny_images_*; decodes on the event loop → test_big_images_*; what held → test_what_held_*. Issue L's
Unicode id (a 500 on /feedback) → test_fuzzed_listener_and_feedback_bodies_*."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import signal
import socket
import threading
import time
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
import pytest
from conftest import champion_served, free_port
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from bayes_beats.api import guard
from bayes_beats.api.guard import GuardMiddleware, route_template
from bayes_beats.api.imagevibe import ImageError, describe, load_image
from bayes_beats.api.schemas import GENERATION_PATTERN, RenderRequest

KEY = "hardening-k3y"
AUTH = {"X-API-Key": KEY}


class Served(NamedTuple):
    url: str
    port: int
    proc: object
    log: Path


@pytest.fixture(scope="module")
def hardened(registry, tmp_path_factory):
    """`bentoml serve` with the tiny champion behind an API key. The last test of this file SIGTERMs it."""
    with champion_served(registry, tmp_path_factory.mktemp("hardening"), BAYES_BEATS_API_KEY=KEY) as (proc, url, log):
        yield Served(url, int(urlsplit(url).port or 0), proc, Path(log.name))


def png(size=(64, 48), pnginfo=None, mode="RGB") -> bytes:
    buffer = io.BytesIO()
    if size[0] * size[1] > 1_000_000:  # big: a smooth gradient (compresses to little, decodes at full size)
        row = np.linspace(0, 255, size[0], dtype=np.uint8)
        image = Image.fromarray(np.ascontiguousarray(np.broadcast_to(row, (size[1], size[0])))).convert(mode)
    else:
        image = Image.new(mode, size, (200, 120, 60) if mode == "RGB" else 128)
    image.save(buffer, format="PNG", pnginfo=pnginfo, compress_level=1)
    return buffer.getvalue()


@cache
def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (60, 120, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


@cache
def text_chunk_bomb() -> bytes:
    """A 20 KB PNG whose zTXt chunk inflates to 20 MB: Pillow raises ValueError in Image.open."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * (20 * 1024 * 1024), zip=True)
    return png((8, 8), info)


@cache
def big_png(side: int) -> bytes:
    return png((side, side))


def error_of(response: httpx.Response) -> str:
    """The error text of a 4xx (BentoML answers some as a one-element list), with its detail."""
    body = response.json()
    error = body[0] if isinstance(body, list) else body
    assert isinstance(error, dict) and error.get("error"), body
    return f"{error['error']} {json.dumps(error.get('detail', ''))}"


def raw(port: int, request: bytes, timeout: float = 20) -> tuple[int, bytes]:
    """One raw HTTP/1.1 exchange (no client-side normalisation of the path): status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def request_head(method: str, path: str, length: int | None = None, extra: str = "", key: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if key:
        lines.append(f"X-API-Key: {KEY}")
    if length is not None:
        lines += ["Content-Type: multipart/form-data; boundary=b", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


async def trickle(port: int, head: bytes, chunk: bytes = b"-" * 4, every: float = 0.5, limit: float = 40):
    """Send `head`, then `chunk` every `every` s, until the server answers: (status or 0, seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(head)

    async def feed() -> None:
        try:
            while True:
                await writer.drain()
                await asyncio.sleep(every)
                writer.write(chunk)
        except (OSError, asyncio.CancelledError):
            pass

    feeder = asyncio.create_task(feed())
    try:
        line = await asyncio.wait_for(reader.readline(), limit)
    except (TimeoutError, OSError):
        line = b""
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        writer.close()
    return (int(line.split()[1]) if line.startswith(b"HTTP/") else 0), time.monotonic() - start


def metrics_text(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=30).text


def in_progress(url: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text(url).splitlines()
        if line.startswith("bentoml_service_request_in_progress{")
    )


# ---- server-side request forgery: only a real file upload is an image


class Listener(ThreadingHTTPServer):
    """A loopback HTTP server that answers every GET with a PNG and counts what reached it."""

    daemon_threads = True

    def __init__(self) -> None:
        self.hits = 0
        image = png((16, 16))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:  # noqa: N802, N805
                self.hits += 1
                handler.send_response(200)
                handler.send_header("Content-Type", "image/png")
                handler.send_header("Content-Length", str(len(image)))
                handler.end_headers()
                handler.wfile.write(image)

            def log_message(handler, *args) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)


@pytest.mark.serving
def test_only_real_file_uploads_are_images_no_url_is_fetched_under_concurrency(hardened):
    listener = Listener()
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{listener.server_address[1]}/x.png"
    try:
        variants = [  # how a client can put a string where the image goes
            {"data": {"image": target}},  # urlencoded (BentoML reads it as a form)
            {"files": {"image": (None, target)}},  # multipart, a part without a filename: curl -F image=URL
            {"files": {"image": (None, target), "caption": (None, "x")}},
            {"files": {"image": (None, "file:///etc/passwd")}},
            {"files": {"image": (None, f'"{target}"')}},
            {"json": {"image": target}},
        ]
        jobs = [("/vibe", variants[i % len(variants)]) for i in range(150)]
        jobs += [("/generate_from_image", variants[i % len(variants)]) for i in range(90)]

        async def one(http: httpx.AsyncClient, path: str, kwargs: dict) -> httpx.Response:
            return await http.post(path, timeout=60, **kwargs)

        async def all_at_once() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=hardened.url, headers=AUTH, limits=limits) as http:
                return await asyncio.gather(*(one(http, p, k) for p, k in jobs))

        responses = asyncio.run(all_at_once())
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {400}, statuses
        assert all("image" in error_of(r) for r in responses)
        time.sleep(0.5)
        assert listener.hits == 0, f"{listener.hits} requests reached the loopback listener"
        # a real upload still works
        r = httpx.post(f"{hardened.url}/vibe", files={"image": ("x.jpg", jpeg(), "image/jpeg")}, headers=AUTH)
        assert r.status_code == 200 and r.json()["caption"]
    finally:
        listener.shutdown()
        listener.server_close()


# ---- slow bodies and clients that leave


@pytest.mark.serving
def test_slow_bodies_time_out_with_408_and_never_take_the_service_s_concurrency(hardened):
    """64 clients trickling a body to /vibe and 64 sending a body with GET /catalog (the probe's stall):
    meanwhile /generate with the key answers 200, never 429; the trickles end in 408 after the grace."""

    async def main():
        post = request_head("POST", "/vibe", length=100_000)
        get = request_head("GET", "/catalog", length=100_000, key=False)
        posts = [asyncio.create_task(trickle(hardened.port, post)) for _ in range(64)]
        gets = [asyncio.create_task(trickle(hardened.port, get)) for _ in range(64)]
        await asyncio.sleep(2.0)
        async with httpx.AsyncClient(base_url=hardened.url, headers=AUTH) as http:
            started = time.monotonic()
            generated = await http.post(
                "/generate", json={"prompt": "calm harbour at dusk", "duration_s": 2}, timeout=60
            )
            generate_s = time.monotonic() - started
            catalog = await http.get("/catalog")
        return await asyncio.gather(*posts), await asyncio.gather(*gets), generated, generate_s, catalog

    posts, gets, generated, generate_s, catalog = asyncio.run(main())
    print(f"during the stall: /generate {generated.status_code} in {generate_s:.1f} s")
    assert generated.status_code == 200, generated.text[:300]
    assert catalog.status_code == 200
    assert {status for status, _ in gets} == {400} and max(s for _, s in gets) < 5  # no body on GET: at once
    seconds = sorted(s for _, s in posts)
    print(f"trickled POSTs: 408 after {seconds[0]:.1f}–{seconds[-1]:.1f} s")
    assert {status for status, _ in posts} == {408}
    assert seconds[0] > guard.BODY_GRACE_S - 1 and seconds[-1] < guard.BODY_GRACE_S + 8


@pytest.mark.serving
def test_a_client_leaving_mid_body_ends_its_request_at_once(hardened):
    before = hardened.log.read_text().count("client disconnected before sending the whole body")
    for _ in range(8):
        with socket.create_connection(("127.0.0.1", hardened.port)) as s:
            s.sendall(request_head("POST", "/vibe", length=1_000_000) + b"-" * 5000)
    left = time.monotonic()
    ended = None
    while time.monotonic() - left < 10:
        if hardened.log.read_text().count("client disconnected before sending the whole body") - before >= 8:
            ended = time.monotonic() - left
            break
        time.sleep(0.05)
    print(f"8 requests whose client left mid-body ended {ended} s after it left")
    assert ended is not None and ended < 2.0
    assert in_progress(hardened.url) == 0
    r = httpx.post(f"{hardened.url}/vibe", files={"image": ("x.jpg", jpeg(), "image/jpeg")}, headers=AUTH)
    assert r.status_code == 200


# ---- /metrics: one label per route


@pytest.mark.serving
def test_metrics_are_labelled_by_route_so_invented_paths_cannot_grow_them(hardened):
    httpx.get(f"{hardened.url}/catalog/warm-up/image")  # the template's series exist before the measure
    before = len(metrics_text(hardened.url))
    tokens = [f"{i:04d}" for i in range(300)]

    async def main():
        async with httpx.AsyncClient(
            base_url=hardened.url, headers=AUTH, limits=httpx.Limits(max_connections=32)
        ) as http:
            unknown = [http.get(f"/{t}{'u' * 8000}") for t in tokens[:200]]
            catalog = [http.get(f"/catalog/{t}{'c' * 1000}/image") for t in tokens[200:]]
            return await asyncio.gather(*unknown), await asyncio.gather(*catalog)

    unknown, catalog = asyncio.run(main())
    assert {r.status_code for r in unknown} == {404} and {r.status_code for r in catalog} == {404}
    text = metrics_text(hardened.url)
    print(f"/metrics: {before} bytes before, {len(text)} after 200 unknown 8 KB paths and 100 unknown catalog ids")
    assert len(text) - before < 4_000
    assert "uuuuuuuu" not in text and "cccccccc" not in text
    assert 'endpoint="/catalog/{entry_id}/image"' in text


# ---- client mistakes: a 4xx that names the field, one log line, never a traceback


CLIENT_MISTAKES = {
    "png with a huge compressed text chunk": (
        "/vibe",
        {"files": {"image": ("x.png", text_chunk_bomb(), "image/png")}},
        "image",
    ),
    "image under another field name": ("/vibe", {"files": {"photo": ("x.jpg", jpeg(), "image/jpeg")}}, "photo"),
    "image under another field name, with image": (
        "/generate_from_image",
        {"files": {"picture": ("x.jpg", jpeg(), "image/jpeg")}, "data": {"caption": "x"}},
        "picture",
    ),
    "3000-character filename": ("/vibe", {"files": {"image": ("a" * 3000 + ".jpg", jpeg(), "image/jpeg")}}, "image"),
    "file:// url as the image": ("/vibe", {"files": {"image": (None, "file:///etc/passwd")}}, "image"),
    "file:// url, urlencoded": ("/generate_from_image", {"data": {"image": "file:///etc/passwd"}}, "image"),
    "6300 x 6300 png": ("/vibe", {"files": {"image": ("x.png", big_png(6300), "image/png")}}, "image"),
    "prompt with a right-to-left override": ("/generate", {"json": {"prompt": "calm \u202e lake"}}, "prompt"),
    "prompt with a next-line control": ("/generate", {"json": {"prompt": "calm\u0085lake"}}, "prompt"),
    "prompt with a zero-width space": ("/generate", {"json": {"prompt": "calm\u200blake"}}, "prompt"),
    "caption with a right-to-left override": (
        "/generate_from_image",
        {"files": {"image": ("x.jpg", jpeg(), "image/jpeg")}, "data": {"caption": "hills \u202e"}},
        "caption",
    ),
    "not an image": ("/vibe", {"files": {"image": ("x.png", b"hello", "image/png")}}, "image"),
    "no image at all": ("/vibe", {"files": {"caption": (None, "x")}}, "image"),
}


@pytest.mark.serving
def test_client_mistakes_are_a_4xx_naming_the_field_and_one_log_line(hardened):
    log_start = len(hardened.log.read_bytes())
    wrong = []
    for case, (path, kwargs, field) in CLIENT_MISTAKES.items():
        r = httpx.post(f"{hardened.url}{path}", headers=AUTH, timeout=60, **kwargs)
        if not (400 <= r.status_code < 500 and field in error_of(r)):
            wrong.append((case, r.status_code, r.text[:300]))
    r = httpx.request("GET", f"{hardened.url}/catalog", content=b"x" * 100)  # a GET with a body
    if r.status_code != 400 or "body" not in error_of(r):
        wrong.append(("GET with a body", r.status_code, r.text[:300]))
    assert not wrong, wrong
    time.sleep(0.5)
    logged = hardened.log.read_bytes()[log_start:].decode(errors="replace")
    assert "Traceback" not in logged and "[ERROR]" not in logged, logged[-3000:]


@pytest.mark.serving
def test_tiny_images_have_a_finite_vibe(hardened):
    for size in ((1, 1), (2, 1), (1, 2), (2, 2), (3, 1)):
        r = httpx.post(f"{hardened.url}/vibe", files={"image": ("x.png", png(size), "image/png")}, headers=AUTH)
        assert r.status_code == 200, (size, r.text[:300])
        vibe = r.json()
        numbers = [vibe["valence"], vibe["arousal"], *vibe["cues"].values()]
        assert all(math.isfinite(x) for x in numbers), (size, vibe)
        assert "nan" not in vibe["caption"].lower()


# ---- big images decode off the event loop


@pytest.mark.serving
def test_big_images_decode_off_the_event_loop_and_over_the_cap_are_refused_at_once(hardened):
    async def probe_while(requests):
        latencies: list[float] = []
        async with httpx.AsyncClient(base_url=hardened.url, headers=AUTH, timeout=120) as http:
            work = asyncio.gather(*(http.post(path, **kwargs) for path, kwargs in requests))
            task = asyncio.ensure_future(work)
            while not task.done():
                started = time.monotonic()
                assert (await http.get("/readyz")).status_code == 200
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.05)
            return await task, latencies

    over = [("/generate_from_image", {"files": {"image": ("x.png", big_png(6300), "image/png")}})] * 8
    started = time.monotonic()
    refused, _ = asyncio.run(probe_while(over))
    refused_s = time.monotonic() - started
    assert {r.status_code for r in refused} == {400} and all("megapixels" in error_of(r) for r in refused)
    assert refused_s < 10  # read from the header: never decoded

    image = {"files": {"image": ("x.png", big_png(4000), "image/png")}}  # 16 MP: the PNG cap
    big = [("/vibe", image)] * 4 + [("/generate_from_image", {**image, "data": {"duration_s": "2"}})] * 4
    started = time.monotonic()
    answered, latencies = asyncio.run(probe_while(big))
    print(
        f"8 × 6300² PNG refused in {refused_s:.1f} s; 8 × 4000² PNG answered in {time.monotonic() - started:.1f} s, "
        f"/readyz meanwhile: max {max(latencies):.2f} s, median {sorted(latencies)[len(latencies) // 2]:.3f} s"
    )
    assert {r.status_code for r in answered} == {200}, [r.text[:200] for r in answered]
    assert max(latencies) < 1.0


# ---- what held must keep holding, now that the guard routes and sits in front


TRAVERSALS = [
    "/static/../../etc/passwd",
    "/static/..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static/....//....//etc/passwd",
    "/static/..\\..\\etc\\passwd",
    "/static/%252e%252e/etc/passwd",
    "/static//etc/passwd",
    "/static/%00",
    "/static/index.html%00.png",
    "/static_content/../../../etc/passwd",
    "/static_content/..%2f..%2f..%2fetc%2fpasswd",
    "/assets/..%2f..%2fetc%2fpasswd",
    "/catalog/..%2f..%2fetc%2fpasswd/image",
    "/catalog/%2e%2e/image",
    "/catalog/../../etc/passwd",
    "/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "//etc/passwd",
    "/etc/passwd",
    "/.env",
    "/.git/config",
    "/service.py",
    "/serving/service.py",
    "/catalog/green-hills-blue-sky.jpg",
    "/static/../service.py",
    "/static/%2e%2e/service.py",
]
BYPASSES = [  # (method, path, extra header lines): none may reach an endpoint
    ("POST", "/generate", ""),
    ("POST", "/generate", "X-API-Key: \r\n"),
    ("POST", "/generate", "X-API-Key: wrong\r\n"),
    ("POST", "/generate", f"X-API-Key: {KEY.upper()}\r\n"),
    ("POST", "/generate", f"X-API-Key: {KEY[:-1]}\r\n"),
    ("POST", "/generate", "Authorization: Bearer\r\n"),
    ("POST", "/generate", f"Authorization: Basic {KEY}\r\n"),
    ("POST", "/generate", f"Authorization: bearer{KEY}\r\n"),
    ("POST", "/generate/", ""),
    ("POST", "//generate", ""),
    ("POST", "/GENERATE", ""),
    ("POST", "/%67enerate", ""),
    ("POST", "/generate;x", ""),
    ("POST", f"/generate?x-api-key={KEY}", ""),
    ("POST", "/./generate", ""),
    ("POST", "/static/../generate", ""),
    ("POST", "/catalog/../generate", ""),
    ("POST", "/healthz/../generate", ""),
    ("POST", "/metrics/../vibe", ""),
    ("POST", "/catalog%2f..%2fgenerate", ""),
    ("GET", "/generate", ""),
    ("HEAD", "/vibe", ""),
    ("OPTIONS", "/generate_from_image", ""),
    ("POST", "/vibe", "X-Forwarded-For: 127.0.0.1\r\n"),
]


# the listener routes are the page app's (no OpenAPI: schemathesis in test_service.py never saw them)
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300)
TOKENISH = st.from_regex(GENERATION_PATTERN, fullmatch=True).filter(lambda t: len(t) < 400)


@pytest.mark.serving
def test_fuzzed_listener_and_feedback_bodies_are_4xx_never_5xx(hardened):
    """Issue L, finding 4: `{"id": "é"}` was a 500 (UnicodeEncodeError in the id check). Hypothesis sends
    Unicode, id-shaped forgeries and wrong types to POST /feedback and as GET/DELETE /listener/{id}: never
    a 5xx, never a 200 (none of them is an id this service issued)."""
    listener = httpx.post(f"{hardened.url}/listener", headers=AUTH, timeout=30).json()["listener"]
    seen: list[tuple[int, str]] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    @given(
        who=st.one_of(ANY_TEXT, TOKENISH, st.just(listener)),
        id_=st.one_of(ANY_TEXT, TOKENISH, st.integers(), st.none(), st.lists(st.integers(), max_size=2)),
        vote=st.one_of(
            st.sampled_from([1, -1]),
            st.integers(),
            st.text(max_size=3),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
    )
    def feedback(who, id_, vote):
        r = httpx.post(
            f"{hardened.url}/feedback", json={"listener": who, "id": id_, "vote": vote}, headers=AUTH, timeout=30
        )
        seen.append((r.status_code, "feedback"))
        assert r.status_code in (400, 403, 404), (who, id_, vote, r.status_code, r.text[:200])
        assert "error" in r.json()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    @given(name=st.one_of(ANY_TEXT, TOKENISH), method=st.sampled_from(["GET", "DELETE"]))
    def path(name, method):
        assume(name.strip(".") != "")  # "." and ".." are dot segments: the client resolves them away
        r = httpx.request(method, f"{hardened.url}/listener/{quote(name, safe='')}", headers=AUTH, timeout=30)
        seen.append((r.status_code, method))
        assert r.status_code in (400, 404, 405), (name, method, r.status_code, r.text[:200])

    feedback()
    path()
    assert {400} <= {code for code, _ in seen} and len(seen) >= 300


@pytest.mark.serving
def test_what_held_path_traversal_is_404_and_no_key_bypass_reaches_an_endpoint(hardened):
    wrong = []
    for path in TRAVERSALS:
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\r\n"
        status, body = raw(hardened.port, request.encode())
        if status not in (400, 404) or any(leak in body for leak in (b"root:", b"import ", b"[core]", b"API_KEY")):
            wrong.append((path, status, body[:200]))
    for method, path, extra in BYPASSES:
        request = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}"
        request += 'Content-Type: application/json\r\nContent-Length: 18\r\n\r\n{"prompt": "calm"}'
        status, body = raw(hardened.port, request.encode())
        if status not in (401, 404, 405):  # 401; or no route at all; or a static file, which only GET reads
            wrong.append((method, path, extra, status, body[:200]))
    assert not wrong, wrong


# ---- SIGTERM: the service stops within the grace period whatever its clients do (runs last: it stops it)


@pytest.mark.serving
def test_sigterm_stops_the_service_within_the_grace_period_whatever_clients_do(hardened):
    grace_s = 60  # terminationGracePeriodSeconds (infra/k8s) and stop_grace_period (compose)

    async def clients(stop: asyncio.Event) -> None:
        port = hardened.port
        tasks = [asyncio.create_task(trickle(port, request_head("POST", "/vibe", length=100_000))) for _ in range(16)]
        # steady senders: 64 KB/s, fast enough to extend their deadline until the cap
        steady = request_head("POST", "/generate_from_image", length=10_000_000)
        tasks += [asyncio.create_task(trickle(port, steady, b"-" * 32_000, every=0.5, limit=90)) for _ in range(4)]
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]  # connected, silent
        for _, writer in idle[:4]:
            writer.write(b"POST /vibe HTTP/1.1\r\nHost: x\r\n")  # half a request head
        await stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, writer in idle:
            writer.close()

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    runner = threading.Thread(target=lambda: loop.run_until_complete(clients(stop)), daemon=True)
    runner.start()
    time.sleep(2.0)
    started = time.monotonic()
    hardened.proc.send_signal(signal.SIGTERM)  # what Kubernetes and `podman stop` send to PID 1
    try:
        code = hardened.proc.wait(grace_s + 30)
    finally:
        stopped_s = time.monotonic() - started
        loop.call_soon_threadsafe(stop.set)
        runner.join(120)
    print(f"SIGTERM → exit {code} in {stopped_s:.1f} s with 16 trickling, 4 steady, 8 idle clients")
    assert stopped_s < grace_s - 10
    assert code == 0


# ---- in-process: the guard's rules, the image and prompt rules, the log filter


def guarded(**options) -> tuple[GuardMiddleware, httpx.AsyncClient]:
    async def echo(request):
        return PlainTextResponse(str(len(await request.body())))

    async def image(request):
        return PlainTextResponse(request.path_params["entry_id"])

    pages = Starlette(routes=[Route("/catalog", echo), Route("/catalog/{entry_id}/image", image)])
    app = Starlette(routes=[Route("/vibe", echo, methods=["POST"]), Route("/readyz", echo), Mount("/", pages)])
    middleware = GuardMiddleware(app, **options)
    return middleware, httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url="http://test")


def test_guard_routes_by_template_and_refuses_unknown_paths_and_get_bodies():
    routes = Starlette(routes=[Route("/vibe", lambda r: None, methods=["POST"])]).routes
    assert route_template(routes, {"type": "http", "path": "/vibe", "method": "GET", "root_path": ""}) == "/vibe"

    async def go():
        middleware, client = guarded()
        async with client:
            assert (await client.get("/catalog/abc/image")).text == "abc"
            assert middleware.route({"type": "http", "path": "/catalog/x/image", "method": "GET", "root_path": ""}) == (
                "/catalog/{entry_id}/image"
            )
            nowhere = await client.get("/nowhere" + "x" * 8000)
            assert nowhere.status_code == 404 and nowhere.json() == {"error": "not found"}
            with_body = await client.request("GET", "/catalog", content=b"abc")
            assert with_body.status_code == 400 and "body" in with_body.json()["error"]
            assert (await client.post("/vibe", content=b"abc")).text == "3"
            no_boundary = await client.post("/vibe", headers={"content-type": "multipart/form-data"})
            assert no_boundary.status_code == 400 and "boundary" in no_boundary.json()["error"]  # empty, still read

    asyncio.run(go())


def multipart(disposition: bytes, content: bytes) -> dict:
    body = b"--b\r\nContent-Disposition: form-data; " + disposition + b"\r\nContent-Type: image/jpeg\r\n\r\n"
    return {
        "content": body + content + b"\r\n--b--\r\n",
        "headers": {"content-type": "multipart/form-data; boundary=b"},
    }


def test_guard_accepts_only_files_as_the_image_and_only_the_image_as_a_file():
    async def go():
        _, client = guarded()
        async with client:
            ok = await client.post("/vibe", files={"image": ("x.jpg", jpeg(), "image/jpeg")}, data={"caption": "c"})
            assert ok.status_code == 200
            for kwargs, field in [
                ({"files": {"image": (None, "http://127.0.0.1/x.png")}}, "image"),
                ({"data": {"image": "http://127.0.0.1/x.png"}}, "image"),
                ({"files": {"photo": ("x.jpg", jpeg(), "image/jpeg")}}, "photo"),
                ({"files": {"image": ("x" * 300, jpeg(), "image/jpeg")}}, "image"),
                (multipart(b'name="image"; filename="x\x01.jpg"', jpeg()), "image"),  # httpx would escape it
            ]:
                r = await client.post("/vibe", **kwargs)
                assert r.status_code == 400 and field in r.json()["error"], (kwargs, r.text)

    asyncio.run(go())


def test_guard_times_out_trickles_ends_disconnects_and_bounds_what_it_buffers():
    options = {"body_grace_s": 0.3, "body_timeout_s": 1.0, "min_body_rate": 1000}
    middleware, _ = guarded(**options)
    small, _ = guarded(**options, buffer_budget=5000)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/vibe",
        "root_path": "",
        "headers": [(b"content-length", b"9999")],
    }

    async def answer(receive, middleware=middleware) -> tuple[int, float]:
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        started = time.monotonic()
        await middleware(dict(scope), receive, send)
        return sent[0]["status"], time.monotonic() - started

    def trickling(chunk: bytes, every: float):
        async def receive():
            await asyncio.sleep(every)
            return {"type": "http.request", "body": chunk, "more_body": True}

        return receive

    async def gone():
        return {"type": "http.disconnect"}

    async def go():
        status, seconds = await answer(trickling(b"x", 0.05))  # a byte every 50 ms
        assert status == 408 and 0.25 < seconds < 0.6
        status, seconds = await answer(trickling(b"x" * 100, 0.02))  # 5 KB/s: extends its deadline to the cap
        assert status == 408 and 0.9 < seconds < 1.2
        status, seconds = await answer(gone)
        assert status == 400 and seconds < 0.1
        status, _ = await answer(trickling(b"x" * 1000, 0), small)
        assert status == 503 and small.buffered == 0 and middleware.buffered == 0  # over the budget; released

    asyncio.run(go())


def test_images_that_crash_pillow_or_have_no_inside_get_a_clean_answer():
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(text_chunk_bomb())
    with pytest.raises(ImageError, match="limit is 16 for PNG"):
        load_image(big_png(4001))
    for size in ((1, 1), (2, 1), (1, 2), (2, 2)):
        vibe = describe(Image.new("RGB", size, (30, 80, 200)))
        assert all(math.isfinite(v) for v in (vibe.valence, vibe.arousal, *vibe.cues.values()))
        assert "nan" not in vibe.caption


@pytest.mark.parametrize("ch", ["\u202e", "\u2066", "\u200f", "\u0085", "\u200b", "\ufeff", "\u2028", "\x1b", "\x7f"])
def test_prompts_refuse_invisible_and_bidirectional_characters(ch):
    with pytest.raises(ValueError, match=f"U\\+{ord(ch):04X}"):
        RenderRequest(prompt=f"calm{ch}lake")


def test_prompts_keep_what_people_write():
    for prompt in ("café at dawn", "tab\tand\nnewline", "family 👨\u200d👩\u200d👧 ✔️", "فارسی\u200cنویسی", "日本の夏"):
        assert RenderRequest(prompt=prompt).prompt == prompt.strip()


def test_a_client_error_is_one_info_line_and_a_server_error_keeps_its_traceback():
    from bentoml.exceptions import InvalidArgument

    def record(error: BaseException) -> logging.LogRecord:
        try:
            raise error
        except BaseException:
            import sys

            return logging.LogRecord(
                "bentoml._internal.server.http_app",
                logging.ERROR,
                __file__,
                1,
                "Exception on %s [%s]",
                ("/vibe", "POST"),
                sys.exc_info(),
            )

    client = record(InvalidArgument("image: not an image"))
    assert guard._ClientErrorFilter().filter(client)
    assert client.levelno == logging.INFO and client.exc_info is None
    assert client.getMessage() == "Exception on /vibe [POST]: 400 image: not an image"
    server = record(RuntimeError("boom"))
    assert guard._ClientErrorFilter().filter(server) and server.levelno == logging.ERROR and server.exc_info
