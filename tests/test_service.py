"""The service for real: `bentoml serve` on loopback with the tiny fine-tuned model as the registry's
champion; the API, bad input, batching, metrics, OpenAPI fuzzing (schemathesis); the page: test_page.py."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import BIN, REPO, champion_served, params_with, start_service, stop_service
from PIL import Image

pytestmark = pytest.mark.serving
CATALOG = REPO / "serving" / "catalog"


@pytest.fixture(scope="module")
def served(registry, clap_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("service")
    request_log = tmp / "requests.sqlite"
    env = {"BAYES_BEATS_REQUEST_LOG": str(request_log), "BAYES_BEATS_CLAP_DIR": str(clap_dir)}
    # every row measured: the test reads the last one (the measuring budget has its own test, in test_monitor)
    env["BAYES_BEATS_MEASURE_SHARE"] = "all"
    with champion_served(registry, tmp, **env) as (_, url, _):
        yield url, request_log


@pytest.fixture(scope="module")
def service(served):
    return served[0]


def jpeg(color=(200, 120, 60), size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_generate_returns_a_wav_of_the_requested_length(service):
    r = httpx.post(
        f"{service}/generate", json={"prompt": "a calm lake at dawn", "duration_s": 3, "seed": 1}, timeout=60
    )
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    audio, sr = sf.read(io.BytesIO(r.content))
    assert sr == 22050 and abs(len(audio) / sr - 3.0) < 0.1 and np.abs(audio).max() > 0.01
    assert 40 <= float(r.headers["x-bpm"]) <= 220 and r.headers["x-keyscale"].endswith(("major", "minor"))
    assert 0 <= float(r.headers["x-energy"]) <= 1
    again = httpx.post(f"{service}/generate", json={"prompt": "a calm lake at dawn", "duration_s": 3, "seed": 1})
    assert again.content == r.content  # seeded: the same request gives the same audio


def test_variations_come_back_as_json_and_differ(service):
    body = {"prompt": "stormy night sea", "duration_s": 2, "num_variations": 3, "temperature": 1.5}
    r = httpx.post(f"{service}/generate", json=body, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    wavs = [base64.b64decode(v["wav_base64"]) for v in r.json()["variations"]]
    assert len(wavs) == 3 and len(set(wavs)) == 3
    fixed = httpx.post(
        f"{service}/generate", json=body | {"bpm": 128, "keyscale": "D minor", "energy": 0.2}, timeout=60
    )
    plans = [{k: v[k] for k in ("bpm", "keyscale", "energy")} for v in fixed.json()["variations"]]
    assert plans == [{"bpm": 128.0, "keyscale": "D minor", "energy": 0.2}] * 3


def test_vibe_and_generate_from_image(service):
    photo = (CATALOG / "green-hills-blue-sky.jpg").read_bytes()
    vibe = httpx.post(f"{service}/vibe", files={"image": ("x.jpg", photo, "image/jpeg")}).json()
    assert vibe["caption"] and -1 <= vibe["valence"] <= 1 and -1 <= vibe["arousal"] <= 1
    assert set(vibe["cues"]) == {"brightness", "saturation", "hue_deg", "warmth", "contrast", "edges"}
    r = httpx.post(
        f"{service}/generate_from_image",
        files={"image": ("x.jpg", photo, "image/jpeg")},
        data={"caption": "green hills under a blue sky", "duration_s": "2"},
        timeout=60,
    )
    out = r.json()
    assert r.status_code == 200 and out["vibe"]["caption"] in out["prompt"] and "green hills" in out["prompt"]
    audio, sr = sf.read(io.BytesIO(base64.b64decode(out["variations"][0]["wav_base64"])))
    assert abs(len(audio) / sr - 2.0) < 0.1


def test_each_generation_is_logged_with_what_the_audio_measures(served):
    from bayes_beats.api.requestlog import read_requests

    url, request_log = served
    prompt = "rainy window, slow and quiet, logged"
    assert httpx.post(f"{url}/generate", json={"prompt": prompt, "duration_s": 3}, timeout=60).status_code == 200
    photo = (CATALOG / "green-hills-blue-sky.jpg").read_bytes()
    files = {"image": ("x.jpg", photo, "image/jpeg")}
    r = httpx.post(f"{url}/generate_from_image", files=files, data={"caption": "logged"}, timeout=60)
    assert r.status_code == 200
    deadline, rows = time.monotonic() + 60, None
    while time.monotonic() < deadline:  # written off the request path: poll
        rows = read_requests(str(request_log)) if request_log.exists() else None
        if rows is not None and rows["prompt"].str.contains("logged").sum() == 2:
            break
        time.sleep(0.5)
    assert rows is not None
    text = rows[rows["prompt"] == prompt].iloc[-1]
    image = rows[rows["endpoint"] == "image"].iloc[-1]
    assert text["duration_s"] == 3 and 40 < text["bpm"] < 240 and text["mode"] in ("major", "minor")
    assert text["latency_s"] > 0 and -1 <= text["clap_local"] <= 1 and "champion" in text["model_version"]
    assert np.isnan(text["valence"]) and image["valence"] == pytest.approx(r.json()["vibe"]["valence"], abs=1e-6)
    # the log's own counts on /metrics: rows written, none dropped or failed
    assert wait_for_metric(url, LOG_ROWS, outcome="recorded", at_least=2) >= 2
    assert metric(url, LOG_ROWS, outcome="dropped") == metric(url, LOG_ROWS, outcome="failed") == 0


def test_catalog_lists_serves_and_refuses_unknown_ids(service):
    images = httpx.get(f"{service}/catalog").json()["images"]
    assert len(images) >= 12 and all(i["caption"] for i in images)
    pick = httpx.get(f"{service}/catalog/random").json()
    assert pick["id"] in {i["id"] for i in images}
    r = httpx.get(f"{service}{pick['image_url']}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    for bad in ("nope", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a" * 300):
        r = httpx.get(f"{service}/catalog/{bad}/image")
        assert r.status_code == 404, bad


def bomb() -> bytes:
    buffer = io.BytesIO()  # 9000 × 5000 = 45 megapixels, a few kilobytes compressed
    Image.new("1", (9000, 5000)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_REQUESTS = {
    "non-image bytes": ("/vibe", {"files": {"image": ("x.png", b"not an image at all", "image/png")}}),
    "truncated jpeg": ("/vibe", {"files": {"image": ("x.jpg", jpeg()[:300], "image/jpeg")}}),
    "decompression bomb": ("/vibe", {"files": {"image": ("x.png", bomb(), "image/png")}}),
    "gif": ("/vibe", {"files": {"image": ("x.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif")}}),
    "wrong content type": ("/vibe", {"files": {"image": ("x.txt", b"hello", "text/plain")}}),
    "empty prompt": ("/generate", {"json": {"prompt": ""}}),
    "blank prompt": ("/generate", {"json": {"prompt": "   "}}),
    "overlong prompt": ("/generate", {"json": {"prompt": "x" * 501}}),
    "non-utf8 prompt": (
        "/generate",
        {"content": b'{"prompt": "\xff\xfe"}', "headers": {"content-type": "application/json"}},
    ),
    "duration too long": ("/generate", {"json": {"prompt": "calm", "duration_s": 999}}),
    "duration zero": ("/generate", {"json": {"prompt": "calm", "duration_s": 0}}),
    "too many variations": ("/generate", {"json": {"prompt": "calm", "num_variations": 9}}),
    "negative temperature": ("/generate", {"json": {"prompt": "calm", "temperature": -1}}),
    "bpm out of range": ("/generate", {"json": {"prompt": "calm", "bpm": 1000}}),
    "bad keyscale": ("/generate", {"json": {"prompt": "calm", "keyscale": "H major"}}),
    "energy above 1": ("/generate", {"json": {"prompt": "calm", "energy": 1.5}}),
    "energy not a number": ("/generate", {"json": {"prompt": "calm", "energy": "loud"}}),
    "malformed json": ("/generate", {"content": b'{"prompt": ', "headers": {"content-type": "application/json"}}),
    "wrong type": ("/generate", {"json": {"prompt": "calm", "seed": "many"}}),
    "oversized body": ("/vibe", {"files": {"image": ("x.jpg", b"\xff\xd8" + b"0" * (12 * 1024 * 1024), "image/jpeg")}}),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_4xx_and_the_service_keeps_serving(service, case):
    path, kwargs = BAD_REQUESTS[case]
    r = httpx.post(f"{service}{path}", timeout=60, **kwargs)
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text[:300])
    body = r.json()
    error = body[0] if isinstance(body, list) else body
    assert error.get("error"), (case, body)
    ok = httpx.post(f"{service}/vibe", files={"image": ("x.jpg", jpeg(), "image/jpeg")})
    assert ok.status_code == 200


def test_request_limits_are_declared_once_and_sit_within_the_generators():
    """RenderRequest holds the API's limits; the generator's are the profile's params (ModelParams), wider,
    and a request beyond a narrower profile's is refused naming the field, by the API and the generator."""
    from types import SimpleNamespace

    from bayes_beats.api.schemas import RenderRequest
    from bayes_beats.model.generate import Generator

    api, model = RenderRequest.model_json_schema()["properties"], params_with().model
    bpm = next(s for s in api["bpm"]["anyOf"] if s.get("type") == "number")
    assert model.min_seconds <= api["duration_s"]["minimum"] and api["duration_s"]["maximum"] <= model.max_seconds
    assert api["num_variations"]["maximum"] <= model.max_variations
    assert api["temperature"]["maximum"] <= model.max_temperature
    assert model.min_bpm <= bpm["minimum"] and bpm["maximum"] <= model.max_bpm
    assert api["prompt"]["maxLength"] <= model.max_prompt_chars
    energy = next(s for s in api["energy"]["anyOf"] if s.get("type") == "number")
    assert (energy["minimum"], energy["maximum"]) == (0, 1)  # a percentile, as the generator takes it

    narrow = params_with(
        model={"profile": "acestep15", "min_seconds": 5, "max_seconds": 20, "max_variations": 2}
        | {"max_temperature": 1.5, "min_bpm": 60, "max_bpm": 180, "max_prompt_chars": 100}
    ).model
    limits = {"profile": narrow.profile} | narrow.model_dump()
    generator = Generator(SimpleNamespace(sample_rate=22050), narrow)  # type: ignore[arg-type]
    assert RenderRequest(prompt="calm", duration_s=10).beyond(limits) is None
    for field, value in {
        "duration_s": 25,
        "num_variations": 3,
        "temperature": 1.8,
        "bpm": 200,
        "prompt": "x" * 200,
    }.items():
        request = RenderRequest.model_validate({"prompt": "calm", field: value})
        problem = request.beyond(limits)
        assert problem and problem.startswith(f"{field}:") and "acestep15" in problem, (field, problem)
        args = [request.prompt], request.duration_s, request.num_variations, request.temperature, request.bpm
        args = (*args, request.keyscale, request.energy)
        with pytest.raises(ValueError, match="prompt longer" if field == "prompt" else field):
            generator._validate(*args)


def test_the_page_takes_its_limits_from_the_service(service):
    from bayes_beats.api.imagevibe import MAX_BYTES
    from bayes_beats.api.schemas import LISTENER_PATTERN, PROMPT_MAX_CHARS

    limits = httpx.get(f"{service}/limits").json()
    fields = limits["fields"]
    assert limits["max_image_bytes"] == MAX_BYTES and fields["prompt"]["maxLength"] == PROMPT_MAX_CHARS
    assert (fields["bpm"]["minimum"], fields["bpm"]["maximum"]) == (40, 220)
    assert fields["listener"]["pattern"] == LISTENER_PATTERN and fields["duration_s"]["default"] == 10.0
    page = (REPO / "serving" / "static" / "app.js").read_text()
    assert "{8,64}" not in page and "220" not in page and "/limits" in page  # no copy of them in the page


def test_openapi_shows_the_one_request_model(service):
    """POST /generate takes a RenderRequest as its JSON body: the same fields and bounds in the OpenAPI."""
    from bayes_beats.api.schemas import RenderRequest

    spec = httpx.get(f"{service}/docs.json").json()
    schema = spec["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    expected = RenderRequest.model_json_schema()["properties"]
    assert set(schema["properties"]) == set(expected) and schema["required"] == ["prompt"]

    def bounds(field: dict) -> dict:  # of the field, or of its non-null variant (BentoML flattens `anyOf`)
        keys = ("minimum", "maximum", "minLength", "maxLength", "pattern")
        return {k: v[k] for v in field.get("anyOf", [field]) for k in keys if k in v}

    assert {n: bounds(f) for n, f in schema["properties"].items()} == {n: bounds(f) for n, f in expected.items()}


def test_concurrent_requests_are_batched_and_counted_in_metrics(service):
    def one(i: int) -> int:
        body = {"prompt": f"vibe number {i}", "duration_s": 2, "seed": i}
        return httpx.post(f"{service}/generate", json=body, timeout=120).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(16))) == [200] * 16
    for probe in ("/healthz", "/livez", "/readyz"):
        assert httpx.get(f"{service}{probe}").status_code == 200
    metrics = httpx.get(f"{service}/metrics").text
    assert "bentoml_service_request_total" in metrics
    # the renderer's adaptive batcher put several requests into one pipeline call
    sizes = [line for line in metrics.splitlines() if line.startswith("bentoml_service_adaptive_batch_size_sum")]
    counts = [line for line in metrics.splitlines() if line.startswith("bentoml_service_adaptive_batch_size_count")]
    if sizes and counts:  # exported by the renderer's own /metrics when the entry service aggregates them
        assert float(sizes[0].split()[-1]) > float(counts[0].split()[-1])


def test_schemathesis_finds_no_server_errors(service, tmp_path):
    """Fuzz the OpenAPI: ≥ 1000 generated requests, valid and invalid, 0 responses ≥ 500."""
    report = tmp_path / "schemathesis.ndjson"
    done = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{service}/docs.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "150",
            "--mode",
            "all",
            "--seed",
            "1",
            "--request-timeout",
            "60",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(report),
            "--suppress-health-check",
            "all",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=tmp_path,  # its replay cache (.schemathesis/) stays out of the repo
    )
    assert done.returncode == 0, done.stdout[-4000:]
    requests = sum(line.count('"request":') for line in report.read_text().splitlines())
    print(f"schemathesis: {requests} requests")
    (tmp_path.parent / "schemathesis_requests.txt").write_text(str(requests))
    assert requests >= 1000


def test_without_a_champion_the_service_says_why_and_never_gets_ready(tmp_path):
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/empty.db",
        "BAYES_BEATS_MODEL_URI": "models:/bayes-beats@champion",
    }
    with pytest.raises((TimeoutError, RuntimeError)) as failure:
        start_service(tmp_path, env, timeout=60)
    assert "cannot load models:/bayes-beats@champion" in str(failure.value)
    assert "promote a model" in str(failure.value)


def test_package_builds_a_bento_that_serves_the_champion_behind_an_api_key(registry, tmp_path):
    """`bayes-beats package`: registry champion → BentoML store → Bento; then `bentoml serve <bento>`."""
    from conftest import copy_repo

    project = copy_repo(tmp_path / "project")
    (project / "models").symlink_to(registry[0] / "models")  # models/clap goes into the Bento
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry[1], "BENTOML_HOME": str(tmp_path / "bentoml")}
    done = subprocess.run([str(BIN / "bayes-beats"), "package"], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    built = json.loads((project / "metrics" / "package.json").read_text())
    assert built["bento"].startswith("bayes-beats:") and built["registry_version"] >= 1
    # the Bento records the exact tags it was built with, not `:latest`
    name, version = built["bento"].split(":")
    manifest = yaml.safe_load((tmp_path / "bentoml" / "bentos" / name / version / "bento.yaml").read_text())
    features = params_with().features.model_dump_json()  # what the request log measures the audio with
    listeners = params_with().listeners.model_dump_json()  # the vote store's limits (issue L)
    assert manifest["args"] == {
        "model_tag": built["model"],
        "clap_tag": built["clap_model"],
        "features": features,
        "listeners": listeners,
        "stream": params_with().stream.model_dump_json(),  # the radio's settings (issue K)
    }
    served = {m["tag"] for service in manifest["services"] for m in service["models"] or []}
    assert served == {built["model"], built["clap_model"]}  # what `bentoml containerize` puts in the image
    # ... so a newer `bayes-beats` in the store (here not even a loadable model) changes nothing it serves
    newer = subprocess.run(
        [str(BIN / "python"), "-c", NEWER_MODEL], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert newer[0] == newer[1] != built["model"]  # created, and now bayes-beats:latest
    # a request log that cannot be written (its directory is a file) costs rows, never requests
    (tmp_path / "a-file").write_text("")
    env = {"BAYES_BEATS_API_KEY": "k3y", "BAYES_BEATS_REQUEST_LOG": str(tmp_path / "a-file" / "requests.sqlite")}
    proc, url, log = start_service(tmp_path, env, target=built["bento"])
    try:
        body = {"prompt": "sunny afternoon in the park", "duration_s": 2}
        assert httpx.post(f"{url}/generate", json=body).status_code == 401
        r = httpx.post(f"{url}/generate", json=body, headers={"X-API-Key": "k3y"}, timeout=60)
        assert r.status_code == 200 and r.content[:4] == b"RIFF"
        r = httpx.post(f"{url}/generate", json=body | {"num_variations": 2}, headers={"X-API-Key": "k3y"}, timeout=60)
        assert r.status_code == 200 and r.json()["model_version"] == f"v{built['registry_version']} ({built['model']})"
        assert httpx.get(f"{url}/readyz").status_code == 200  # probes stay open
        # the lost rows are counted on /metrics (public, like the probes)
        assert wait_for_metric(url, LOG_ROWS, outcome="failed", at_least=2) == 2
        assert metric(url, LOG_ROWS, outcome="recorded") == metric(url, LOG_ROWS, outcome="dropped") == 0
    finally:
        assert stop_service(proc, log) == 0  # SIGTERM: a clean exit


NEWER_MODEL = """
import bentoml
with bentoml.models.create("bayes-beats", labels={"note": "newer-than-the-bento"}) as model:
    pass
print(model.tag, bentoml.models.get("bayes-beats:latest").tag)
"""
LOG_ROWS = "bayes_beats_request_log_rows_total"


def metric(url: str, name: str, **labels: str) -> float | None:
    """A sample of the service's /metrics (summed over worker processes), None when absent."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
        if line.startswith(name + "{") and all(w in line for w in wanted)
    ]
    return sum(values) if values else None


def wait_for_metric(url: str, name: str, at_least: float, timeout: float = 60, **labels: str) -> float | None:
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:  # the request log counts off the request path: poll
        value = metric(url, name, **labels)
        if value is not None and value >= at_least:
            break
        time.sleep(0.5)
    return value


def test_package_fails_in_one_line_without_a_champion(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/empty.db", "BENTOML_HOME": str(tmp_path / "b")}
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    done = subprocess.run([str(BIN / "bayes-beats"), "package"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]  # (mlflow logs its table creation on a fresh database before)
    assert last.startswith("bayes-beats package: ") and "no bayes-beats version with alias 'champion'" in last
    assert "Traceback" not in done.stderr


@pytest.fixture
def renderer(registry, monkeypatch):
    """The renderer class in-process, the champion loaded from the registry."""
    import importlib.util
    import sys

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry[1])
    monkeypatch.setenv("BAYES_BEATS_MODEL_URI", "models:/bayes-beats@champion")
    monkeypatch.syspath_prepend(str(REPO / "serving"))
    spec = importlib.util.spec_from_file_location("bayes_beats_service_under_test", REPO / "serving" / "service.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module.Renderer.inner()


def test_renderer_in_process_a_request_sounds_the_same_alone_or_batched(renderer, monkeypatch):
    """Batching groups compatible requests into one pipeline call, and a request's audio does not depend on
    what it was batched with."""
    from bayes_beats.api.schemas import RenderRequest

    calls, threads = [], set()
    generate = renderer.generator.generate_with_plans

    def counted(*args, **kwargs):
        calls.append(args[0])
        threads.add(threading.current_thread().name)
        return generate(*args, **kwargs)

    monkeypatch.setattr(renderer.generator, "generate_with_plans", counted)

    a = RenderRequest(prompt="calm lake at dawn", duration_s=2, seed=5)
    b = RenderRequest(prompt="neon city rush", duration_s=2, seed=9)
    c = RenderRequest(prompt="lonely rain", duration_s=3, seed=1)  # another duration: its own group
    alone = asyncio.run(renderer.render([a]))[0]
    batched = asyncio.run(renderer.render([b, a, c]))
    # on CPU a batch is one sub-batch a core (2 here), rendered side by side on the clips' threads: [b, a], [c]
    assert sorted(calls[-2:]) == [["lonely rain"], ["neon city rush", "calm lake at dawn"]]
    assert len(threads) == 2 and all(t.startswith("clips") for t in threads)

    def pcm(rendered):
        return sf.read(io.BytesIO(base64.b64decode(rendered.wavs[0])))[0]

    assert batched[1].keyscale == alone.keyscale and batched[1].bpm == alone.bpm
    difference = np.abs(pcm(batched[1]) - pcm(alone)).max()
    print(f"alone vs batched: max |difference| {difference:.2e}")
    assert difference < 1e-2  # batched matmuls round differently; the music is the same
    assert np.abs(pcm(batched[0]) - pcm(alone)).max() > 0.1


def test_renderer_a_stream_segment_never_waits_behind_clips(renderer):
    """Clips and stream segments queue apart: with every clip thread busy, a segment is rendered at once."""
    from bayes_beats.model.radio import Cursor

    release = threading.Event()
    busy = [renderer.clips.submit(release.wait, 60) for _ in range(8)]  # a burst of /generate holds the clips
    try:
        began = time.perf_counter()
        cursor = Cursor("rain on a window", 3, 1.0).to_dict()
        segment = asyncio.run(asyncio.wait_for(renderer.render_segments([{"cursor": cursor}]), 30))[0]
        assert segment["index"] == 0 and segment["audio"] and segment["model_version"] == renderer.version
        assert not any(job.done() for job in busy), f"took {time.perf_counter() - began:.1f} s"
    finally:
        release.set()


# ---- nothing of BentoML's is patched: the service uses its extension points only

NO_PATCH = r"""
import importlib, inspect, json, sys
WATCHED = ("bentoml", "_bentoml_impl", "_bentoml_sdk", "starlette", "uvicorn")
for name in ("_bentoml_impl.server.app", "_bentoml_impl.server.serving", "_bentoml_impl.worker.service",
             "_bentoml_sdk.service.factory", "bentoml._internal.server.base_app",
             "bentoml._internal.server.http.instruments", "bentoml._internal.server.http.traffic",
             "bentoml._internal.server.http.access", "starlette.routing", "starlette.applications"):
    importlib.import_module(name)

def snapshot():
    seen = {}
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in WATCHED:
            continue
        for attr, value in list(vars(module).items()):
            if inspect.isclass(value) and value.__module__ == name:
                for key, member in list(vars(value).items()):
                    seen[f"{name}.{attr}.{key}"] = id(getattr(member, "fget", member))
            elif inspect.isfunction(value) and value.__module__ == name:
                seen[f"{name}.{attr}"] = id(value.__code__)
                seen[f"{name}.{attr}()"] = id(value)
    return seen

before = snapshot()
sys.path.insert(0, ".")
service = importlib.import_module("service")
imported = snapshot()
service.BayesBeats.to_asgi(is_main=True).build_middleware_stack()  # what a worker builds, the guard too
built = snapshot()
own = "bentoml._internal.configuration.containers."  # the config providers BentoML itself loads and sets
print(json.dumps({stage: sorted(k for k in before if now.get(k) != before[k] and not k.startswith(own))
                  for stage, now in (("import", imported), ("app", built))}))
"""


def test_importing_the_service_patches_nothing_in_bentoml(tmp_path):
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BAYES_BEATS_MODEL_URI": "models:/bayes-beats@champion",  # nothing looked up at import
        "BAYES_BEATS_CLAP_DIR": "",
        "BAYES_BEATS_REQUEST_LOG": "off",
    }
    done = subprocess.run(
        [str(BIN / "python"), "-c", NO_PATCH],
        cwd=REPO / "serving",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    changed = json.loads(done.stdout.splitlines()[-1])
    assert changed == {"import": [], "app": []}, f"patched by serving/service.py: {changed}"
