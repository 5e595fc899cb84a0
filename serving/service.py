"""Bayes' Beats as a BentoML service: image → vibe → music, text → music, and the web page.

Two services, composed: `Renderer` holds the model (loaded once, on the GPU in production) and batches
generation across concurrent requests on a GPU (BentoML adaptive batching: different prompts, one pipeline
call). On CPU torch is single-threaded and the cores render side by side (the tiny DiT's small matrices gain
nothing from two intra-op threads, 40 % more audio a second from two renders at once; docs/design.md "The
stream"), unbatched: clips one a core, and stream segments one a core in a queue of their own, so a burst of
clips never holds up a stream. `BayesBeats` is the public API (validation, image vibe, catalog, page) and
calls the renderer.

Model: the champion imported into the BentoML store by the `package` stage, whose exact tag the Bento
records (Bento arguments `model_tag`, `clap_tag`: a newer model in the store changes nothing; served from
source, `--arg model_tag=...` or `bayes-beats:latest`), or, when BAYES_BEATS_MODEL_URI is set (e.g.
`models:/bayes-beats@champion`), loaded from the MLflow registry at start-up, so an alias moved in the
MLflow UI takes effect on restart.

Shutdown (SIGTERM to `bentoml serve`, which passes it to every worker at once): the API stops accepting
and finishes what it holds; each renderer worker keeps serving until every API worker has said it is done
(its on_shutdown hook; at most BAYES_BEATS_DRAIN_TIMEOUT_S), so no request is cut off between the two.

Request hardening is bayes_beats.api.guard, a service middleware (add_asgi_middleware); nothing of
BentoML's is patched (tests/test_service.py checks the import).

Every generation is logged (bayes_beats.api.requestlog, off the critical path) to BAYES_BEATS_REQUEST_LOG, a
SQLite path or a Postgres URL ("off" disables it), for `bayes-beats monitor`. Its clap_local score uses
the CLAP model in BAYES_BEATS_CLAP_DIR, else the Bento's `bayes-beats-clap` model ("" = no score). Measuring
keeps to BAYES_BEATS_MEASURE_SHARE of a core (default 0.05; "all": every row measured)."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import aiohttp
import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound
from bentoml.validators import ContentType
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from bayes_beats.api import drain
from bayes_beats.api.catalog import load_catalog
from bayes_beats.api.guard import GuardMiddleware
from bayes_beats.api.identity import NotAListener
from bayes_beats.api.imagevibe import ImageError, Vibe, vibe_of_file
from bayes_beats.api.listener_routes import Listeners, client_of
from bayes_beats.api.listeners import ListenerStore, with_env
from bayes_beats.api.page import page_app
from bayes_beats.api.requestlog import MEASURE_SHARE, Generation, RequestLog
from bayes_beats.api.schemas import (
    PROMPT_MAX_CHARS,
    Bpm,
    Caption,
    DurationS,
    Energy,
    Keyscale,
    Listener,
    NumVariations,
    Rendered,
    RenderJob,
    RenderRequest,
    Seed,
    SegmentJob,
    Temperature,
    render_batch,
    variations_json,
)
from bayes_beats.api.stream import StreamHub, StreamLimit
from bayes_beats.api.stream_query import stream_request
from bayes_beats.core.config import FeaturesParams, ListenersParams, StreamParams, load_params
from bayes_beats.model.plans import DEFAULT_TEMPERATURE

HERE = Path(__file__).parent
# The renderer listens on loopback TCP, not a Unix socket: on SIGTERM BentoML's arbiter deletes its socket
# directory before it stops the workers, so requests the API still holds could no longer reach a renderer
# that is still serving them (graceful shutdown: `bayes_beats.api.drain`). `bentoml serve` reads
# this (its documented environment variable) after importing this module, before it creates the socket.
os.environ.setdefault("BENTOML_NO_UDS", "1")
BUILT_WITH = bentoml.use_arguments()  # the Bento's arguments, recorded by `bayes-beats package`; from source: none
MODEL_TAG = getattr(BUILT_WITH, "model_tag", "bayes-beats:latest")
MODEL_URI = os.environ.get("BAYES_BEATS_MODEL_URI", "")
GPU = os.environ.get("BAYES_BEATS_GPU", "0") == "1"
# clips in one batch (1: unbatched). On CPU 1: one clip costs the same on a thread alone as in a batch of 8, and
# BentoML hands a worker one batch at a time, so a batch split over the cores ends with its longer half while the
# next waits (an odd batch leaves a core idle). Unbatched, each core takes the next clip the moment it is free:
# served /generate 0.87 → 1.0 of in-process, side by side (docs/design.md "The two services").
MAX_BATCH = int(os.environ.get("BAYES_BEATS_MAX_BATCH") or ("8" if GPU else "1"))
CPU_CORES = int(os.environ.get("BAYES_BEATS_CPU_CORES", "2"))  # the renderer's (its resources; a pod's CPU request)
# renders at once of each kind (clips, stream segments): on CPU one a core, each single-threaded; on a GPU one
RENDER_THREADS = 1 if GPU else CPU_CORES
# stream segments batch on a GPU only: on CPU a batch of segments returns when its longest one is rendered
SEGMENT_BATCH = MAX_BATCH if GPU else 1
REQUEST_LOG = os.environ.get("BAYES_BEATS_REQUEST_LOG", "requests.sqlite")
CLAP_DIR = os.environ.get("BAYES_BEATS_CLAP_DIR")  # unset: the Bento's CLAP model; "": no clap_local score
# the request log's measuring budget, a share of one core (api.requestlog); "all": every row is measured
MEASURING = os.environ.get("BAYES_BEATS_MEASURE_SHARE", str(MEASURE_SHARE))
MEASURING_SHARE = None if MEASURING == "all" else float(MEASURING)
CLAP_TAG = getattr(BUILT_WITH, "clap_tag", "bayes-beats-clap:latest")
# the features stage's settings, so the request log measures audio as the data was (from source: params.yaml)
FEATURES = getattr(BUILT_WITH, "features", None)
PARAMS = HERE.parent / "params.yaml"
DRAIN_TIMEOUT_S = float(os.environ.get("BAYES_BEATS_DRAIN_TIMEOUT_S", "300"))  # renderer waits for the API
CATALOG = load_catalog(os.environ.get("BAYES_BEATS_CATALOG", str(HERE / "catalog")))


def _recorded(section: str, kind):
    """A params.yaml section the service runs on: recorded in the Bento by `package`; from source, the workspace's."""
    if (recorded := getattr(BUILT_WITH, section, None)) is not None:
        return kind.model_validate_json(recorded)
    if PARAMS.is_file():
        return getattr(load_params(PARAMS), section)
    raise RuntimeError(f"no `{section}` settings: neither the Bento's argument nor {PARAMS} (re-run `package`)")


LISTENERS = Listeners(
    ListenerStore(REQUEST_LOG, with_env(_recorded("listeners", ListenersParams))) if REQUEST_LOG != "off" else None
)
STREAM = _recorded("stream", StreamParams)

page = page_app(HERE / "static", CATALOG, LISTENERS)  # the page, /limits, the catalog, votes, /metrics


def _load_generator(bento_model):
    import mlflow

    from bayes_beats.core.tracking import tracking_uri

    if MODEL_URI:
        mlflow.set_tracking_uri(tracking_uri())
        try:
            model = mlflow.pyfunc.load_model(MODEL_URI)
        except mlflow.exceptions.MlflowException as err:
            raise RuntimeError(
                f"cannot load {MODEL_URI} from the MLflow registry at {tracking_uri()}: {err.message.splitlines()[0]} "
                "(promote a model: `dvc repro register`, or set the alias in the MLflow UI)"
            ) from None
        version = MODEL_URI
    else:
        model = bentoml.mlflow.load_model(bento_model)  # the class attribute resolves to the stored model
        version = f"v{bento_model.info.labels.get('registry_version', '?')} ({bento_model.tag})"
    return model.unwrap_python_model().generator, version


GENERATOR_LIMITS = set(
    ["min_seconds", "max_seconds", "max_prompt_chars", "max_variations", "max_temperature", "min_bpm", "max_bpm"]
)


@bentoml.service(
    name="renderer",
    resources={"gpu": 1} if GPU else {"cpu": str(CPU_CORES)},
    traffic={"timeout": 300, "max_concurrency": 64},
)
class Renderer:
    bento_model = bentoml.models.BentoModel(MODEL_TAG) if not MODEL_URI else None

    def __init__(self) -> None:
        from bayes_beats.model.radio import Radio

        if not GPU:
            import torch

            torch.set_num_threads(1)  # the cores go to renders side by side, one each
        # Clips and stream segments wait in queues of their own (BentoML's `threads` would be one queue for
        # both: a burst of /generate held a new stream's first segment 6-10 s). On a GPU one queue: it renders
        # one batch at a time.
        self.clips = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="clips")
        self.segments = self.clips if GPU else ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="segments")
        self.generator, self.version = _load_generator(self.bento_model)
        self.radio = Radio(self.generator, STREAM)

    def __is_ready__(self) -> bool:
        return self.generator is not None

    @bentoml.on_startup
    def _stop_after_the_api(self) -> None:
        drain.defer_sigterm_until_callers_gone(DRAIN_TIMEOUT_S)

    @bentoml.api
    def limits(self) -> dict:
        """The generator's limits (the profile's ModelParams), which the API checks requests against."""
        p = self.generator.params
        return {"profile": p.profile, "sample_rate": self.generator.sample_rate} | p.model_dump(
            include=GENERATOR_LIMITS
        )

    # max_latency_ms bounds queueing + a batch (a 10-s clip takes ~0.4 s alone); past it BentoML answers 503
    @bentoml.api(batchable=MAX_BATCH > 1, max_batch_size=max(MAX_BATCH, 2), max_latency_ms=60_000)
    async def render(self, requests: list[RenderJob]) -> list[Rendered]:
        """Requests that share duration/variations/temperature/bpm/key/energy/taste go through the pipeline
        together; on CPU a batch (BAYES_BEATS_MAX_BATCH > 1) is cut into one sub-batch a core, rendered side
        by side (each request's audio depends on its own seed only, not on its batch)."""
        size = -(-len(requests) // RENDER_THREADS)
        parts = [requests[i : i + size] for i in range(0, len(requests), size)]
        loop = asyncio.get_running_loop()
        done = await asyncio.gather(
            *(loop.run_in_executor(self.clips, render_batch, self.generator, part, self.version) for part in parts)
        )
        return [rendered for part in done for rendered in part]

    @bentoml.api(batchable=SEGMENT_BATCH > 1, max_batch_size=max(SEGMENT_BATCH, 2), max_latency_ms=60_000)
    async def render_segments(self, jobs: list[SegmentJob]) -> list[dict]:
        """The next segment of each stream (model.radio); streams' segments of one length share a call."""
        jobs = [j if isinstance(j, SegmentJob) else SegmentJob.model_validate(j) for j in jobs]
        segments = await asyncio.get_running_loop().run_in_executor(
            self.segments, self.radio.render_dicts, [j.cursor for j in jobs], [j.taste for j in jobs]
        )
        return [s | {"model_version": self.version} for s in segments]


# BentoML's own probe of the renderer (runner_probe) is off: when it timed out it raised (BentoML 1.4.40
# catches aiohttp's ServerTimeoutError, not the TimeoutError a total timeout raises), and its /readyz task
# then sat in BentoML's TimeoutMiddleware for the whole traffic timeout, holding up graceful shutdown
# (uvicorn waits for every task). `__is_ready__` asks the renderer instead and never raises.
# BentoML's concurrency limit and request metrics are off here: they would sit outside the guard (a slow
# upload would hold a slot; an invented path would become a metrics label); the guard does both after its
# checks (max_concurrency 64, the series bentoml_service_request_*, labelled by route).
@bentoml.service(
    name="bayes-beats",
    traffic={"timeout": 300},
    metrics={"enabled": False},
    runner_probe={"enabled": False, "timeout": 1, "period": 10},
)
@bentoml.asgi_app(page, path="/")
class BayesBeats:
    renderer = bentoml.depends(Renderer)
    clap_model = bentoml.models.BentoModel(CLAP_TAG) if CLAP_DIR is None else None

    def __init__(self) -> None:
        self._limits: dict | None = None
        clap_dir = CLAP_DIR if CLAP_DIR is not None else self.clap_model.path
        # from source: the workspace's params.yaml (`bentoml serve` runs in serving/)
        features = FeaturesParams.model_validate_json(FEATURES) if FEATURES else None
        if features is None and PARAMS.is_file():
            features = load_params(PARAMS).features
        self.request_log = (
            RequestLog(REQUEST_LOG, clap_dir, features=features, measure_share=MEASURING_SHARE)
            if REQUEST_LOG != "off"
            else None
        )
        ids = LISTENERS.start()  # the id key, read once here (a server database without one: no start)
        self.streams = StreamHub(
            STREAM,
            render=self._render_segment,
            taste=LISTENERS.taste_of,
            sign=lambda features, listener: ids.sign(features, LISTENERS.listener_key(listener)),
            record=self._record_segment,
        )

    @bentoml.on_startup
    def _call_the_renderer(self) -> None:
        drain.register_caller()  # the renderer serves until this worker is done (on_shutdown)
        drain.before_sigterm(self.streams.close_all_soon)  # open streams end at a segment boundary

    async def __is_ready__(self) -> bool:
        """Ready when the renderer is: its /readyz within 3 s (the cluster's readiness probe waits 5)."""
        is_ready = getattr(self.renderer, "is_ready", None)
        if is_ready is None:  # a renderer in this process, not served apart: it is there
            return True
        try:
            return bool(await is_ready(3))
        except Exception:  # a slow or absent renderer means "not ready", never a stuck probe
            return False

    @bentoml.on_shutdown
    def _done(self) -> None:
        """After uvicorn answered all this worker held: the renderer may stop; the log is written."""
        drain.caller_done()
        if self.request_log is not None:
            self.request_log.close(timeout_s=20)

    async def _render(
        self, request: RenderRequest, endpoint: str, vibe: Vibe | None = None
    ) -> tuple[Rendered, list[str]]:
        """The rendered takes and their ids; a listener's posterior draw tilts the plan."""
        if self._limits is None:
            self._limits = await self.renderer.to_async.limits()
        if problem := request.beyond(self._limits):  # the profile's generator limits, within the API's
            raise InvalidArgument(problem)
        started = time.perf_counter()
        try:  # an id this service did not issue is a 400, before any rendering
            taste = await LISTENERS.taste_for(request)
        except NotAListener as err:
            raise InvalidArgument(f"listener: {err}") from None
        job = RenderJob(**request.model_dump(exclude={"listener"}), taste=taste)
        for attempt in range(3):
            try:
                result = await self.renderer.to_async.render([job])
                break
            except BentoMLException as err:
                if err.error_code.value < 500:
                    raise InvalidArgument(str(err)) from None
                raise
            except aiohttp.ClientConnectionError:
                # the renderer closed an idle keep-alive connection as this request picked it up (seen under
                # load): nothing was rendered for it, and a seeded generation is safe to send again
                if attempt == 2:
                    raise
        rendered = result[0] if isinstance(result[0], Rendered) else Rendered.model_validate(result[0])
        if self.request_log is not None:
            self.request_log.record(Generation.of(endpoint, request, rendered, time.perf_counter() - started, vibe))
        return rendered, LISTENERS.ids_for(rendered, request.listener)  # each take bound to its listener

    @bentoml.api
    async def generate(self, request: RenderRequest, /) -> Annotated[bytes, ContentType("audio/wav")]:
        """audio/wav for one variation (its plan in X-Bpm, X-Keyscale, X-Energy); JSON with base64 WAVs, bpm,
        key and energy per variation for several."""
        # a root input: the JSON body is a RenderRequest, the one declaration of the fields, their limits
        # and the OpenAPI schema; BentoML validates it (a 400 naming the field) before this runs
        rendered, ids = await self._render(request, "generate")
        if request.num_variations > 1:
            answer = variations_json(rendered, ids, request.listener, prompt=request.prompt)
            return JSONResponse(answer)  # type: ignore[return-value]
        headers = {
            "X-Bpm": str(rendered.bpm[0]),
            "X-Keyscale": rendered.keyscale[0],
            "X-Energy": str(rendered.energy[0]),
            "X-Generation-Id": ids[0],  # for POST /feedback
        }
        return Response(base64.b64decode(rendered.wavs[0]), media_type="audio/wav", headers=headers)  # type: ignore[return-value]

    @bentoml.api
    async def vibe(self, image: Annotated[Path, ContentType("image/*")]) -> dict:
        """An image → its vibe: caption, valence, arousal and the visual cues behind them, and a `token` that
        GET /stream?vibe=TOKEN plays (the image is not sent again)."""
        vibe = (await _vibe(image)).to_dict()
        reading = {k: vibe[k] for k in ("caption", "valence", "arousal")}
        return vibe | {"token": LISTENERS.start().vibe_token(reading)}

    async def _render_segment(self, cursor: dict, taste: list[float] | None) -> dict:
        result = await self.renderer.to_async.render_segments([SegmentJob(cursor=cursor, taste=taste)])
        return result[0]

    def _record_segment(self, stream, playing, wav: bytes, latency_s: float) -> None:
        if self.request_log is not None:
            self.request_log.record(
                Generation.of_segment(
                    stream.model_version,
                    stream.cursor["prompt"],
                    stream.cursor["temperature"],
                    playing,
                    wav,
                    latency_s,
                    stream.vibe,
                )
            )

    @page.get("/stream")
    async def stream(self, request: Request) -> Response:
        """Endless music in a vibe (docs/design.md "The stream"): ?prompt=, ?catalog= or ?vibe= (a /vibe
        token); listener, seed, bpm, keyscale, energy, temperature, format (mp3 | ogg | wav); ?resume=ID
        continues a stream whose connection dropped. Chunked audio until the client leaves; X-Stream-Id."""
        if self._limits is None:
            self._limits = await self.renderer.to_async.limits()
        try:
            stream, encoder = await stream_request(
                self.streams, dict(request.query_params), client_of(request), self._limits, CATALOG, LISTENERS
            )
        except StreamLimit as err:
            return JSONResponse({"error": str(err)}, status_code=429, headers={"Retry-After": "5"})
        except LookupError as err:
            return JSONResponse({"error": str(err)}, status_code=404)
        except ValueError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        headers = {"X-Stream-Id": stream.id, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        body = self.streams.body(stream, encoder, request.is_disconnected)
        return StreamingResponse(body, media_type=encoder.media_type, headers=headers)

    @page.get("/stream/{stream_id}")
    async def stream_status(self, stream_id: str) -> JSONResponse:
        """The segment playing now (index, start, bpm, keyscale, energy, the `id` to vote on) and those next."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return JSONResponse({"error": "unknown stream id"}, status_code=404)
        return JSONResponse(stream.status())

    @bentoml.api
    async def generate_from_image(
        self,
        image: Annotated[Path, ContentType("image/*")],
        caption: Caption = "",
        duration_s: DurationS = 10.0,
        seed: Seed = 0,
        temperature: Temperature = DEFAULT_TEMPERATURE,
        num_variations: NumVariations = 1,
        bpm: Bpm = None,
        keyscale: Keyscale = None,
        energy: Energy = None,
        listener: Listener = None,
    ) -> dict:
        """Image → vibe → music in one call; `caption` (e.g. a catalog caption) is added to the prompt;
        `bpm`, `keyscale`, `energy` nudge the plan; a `listener`'s votes tilt it."""
        from pydantic import ValidationError

        if caption.strip():  # the prompt's rules (no invisible characters …), named as the caption's, before decoding
            try:
                RenderRequest(prompt=caption)
            except ValidationError as err:
                raise InvalidArgument("caption: " + "; ".join(e["msg"] for e in err.errors())) from None
        vibe = await _vibe(image)  # decoded in a worker thread: the event loop keeps serving
        prompt = f"{vibe.caption}. {caption.strip()}"[:PROMPT_MAX_CHARS] if caption.strip() else vibe.caption
        options = dict(num_variations=num_variations, temperature=temperature, bpm=bpm, keyscale=keyscale)
        request = _request(prompt, duration_s, seed, energy=energy, listener=listener, **options)
        rendered, ids = await self._render(request, "image", vibe)
        return variations_json(rendered, ids, listener, vibe=vibe.to_dict(), prompt=prompt)


BayesBeats.add_asgi_middleware(GuardMiddleware, service_name="bayes-beats")


def _request(prompt, duration_s, seed, **options) -> RenderRequest:
    from pydantic import ValidationError

    try:
        return RenderRequest(prompt=prompt, duration_s=duration_s, seed=seed, **options)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise InvalidArgument(problems) from None


async def _vibe(image: Path) -> Vibe:
    """BentoML's temp file for the upload (GuardMiddleware capped the body and let only a real file upload
    through as `image`) → its vibe, decoded off the event loop; a bad image is a 400 naming the field."""
    try:
        return await vibe_of_file(image)
    except ImageError as err:
        raise InvalidArgument(f"image: {err}") from None
    except FileNotFoundError:
        raise NotFound("image: upload missing") from None
