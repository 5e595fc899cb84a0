"""ASGI request guard: the service's front door.

Answers before the endpoints see the request: 400 for a path with control characters, 401 without the API
key (BAYES_BEATS_API_KEY), 404 for a path that matches no route, 400 for a GET with a body, 413 for a body
over the cap, 408 for a body that trickles in, 503 when too many bodies are buffered at once, 429 past the
concurrency limit, 400 for a malformed form and for a form whose `image` is not a real file upload
(BentoML downloads a URL given there: server-side request forgery) or whose file sits under another name.
A client that leaves mid-body ends its request at once. Everything else goes on with its body replayed.

It sits where BentoML puts a service's middleware (`Service.add_asgi_middleware`): inside BentoML's
timeout and access log (BentoML's order by design: bentoml/BentoML#4761). Two of BentoML's own layers
would sit outside it, so the service turns them off (service config) and the guard does their job after
its checks: the concurrency limit (429; a body is read first, so slow clients never hold one of the
slots) and the request metrics (bayes_beats.api.metrics), labelled by route template ("/catalog/{entry_id}/image"), never by a
path a client invents (/metrics stays bounded). And a 4xx is one log line, not an ERROR with a traceback."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import unicodedata

from bayes_beats.api.imagevibe import MAX_BYTES as MAX_IMAGE_BYTES
from bayes_beats.api.metrics import counted

PUBLIC_PATHS = {"/", "/limits", "/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/schema.json"}

PUBLIC_PREFIXES = ("/static/", "/catalog", "/assets/", "/static_content/")

MAX_BODY_BYTES = MAX_IMAGE_BYTES + 1024 * 1024  # the image cap plus multipart overhead
# a body gets BODY_GRACE_S, plus one second per MIN_BODY_RATE bytes received, up to BODY_TIMEOUT_S in all:
# a 10 MB photo needs ~2.8 Mbit/s; a few bytes a second are cut off after ~10 s. The cap also bounds how
# long SIGTERM waits for a client that is still sending (the pods' grace period is 60 s).
BODY_GRACE_S = 10.0
MIN_BODY_RATE = 50_000  # bytes/s
BODY_TIMEOUT_S = 30.0
BUFFER_BUDGET = 512 * 1024 * 1024  # bodies held at once (per worker): what the guard may buffer in memory
FILE_FIELDS = frozenset({"image"})  # form fields that must be, and the only ones that may be, file uploads
MAX_FILENAME_BYTES = 200  # BentoML names its temp file after the upload: 255 bytes is the file system's limit
MAX_FORM_FIELDS, MAX_FORM_FILES = 32, 4
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")  # what BentoML reads as a form
BODYLESS_METHODS = {"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"}
MAX_CONCURRENCY = 64  # requests past the body read at once (per worker); more: 429, as BentoML answers
# probes: no metrics, no concurrency slot; and the radio, whose responses last hours: its own caps and metrics
UNCOUNTED = frozenset({"/metrics", "/healthz", "/livez", "/readyz", "/stream"})

logger = logging.getLogger("bayes_beats.guard")


class GuardMiddleware:
    """ASGI middleware; add it with `Service.add_asgi_middleware(GuardMiddleware, service_name=...)`."""

    def __init__(
        self,
        app,
        max_body_bytes: int = MAX_BODY_BYTES,
        body_grace_s: float = BODY_GRACE_S,
        min_body_rate: float = MIN_BODY_RATE,
        body_timeout_s: float = BODY_TIMEOUT_S,
        buffer_budget: int = BUFFER_BUDGET,
        max_concurrency: int = MAX_CONCURRENCY,
        service_name: str = "",
    ) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.body_grace_s, self.min_body_rate, self.body_timeout_s = body_grace_s, min_body_rate, body_timeout_s
        self.buffer_budget, self.buffered = buffer_budget, 0
        self.max_concurrency, self.active, self.service_name = max_concurrency, 0, service_name
        self.api_key = os.environ.get("BAYES_BEATS_API_KEY", "")
        self._routes: list | None = None
        _quiet_client_errors()
        if logger.level == logging.NOTSET:  # BentoML sets the root logger to WARNING: say what the guard answers
            logger.setLevel(logging.INFO)
        logger.disabled = False  # (BentoML's logging config disables loggers created before it)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):  # "/static/%00": no file system call sees it
            return await _answer(scope, send, 400, "path contains control characters", close=True)
        if self.api_key and path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
            given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return await _answer(scope, send, 401, "missing or wrong API key (header X-API-Key)")
        route = self.route(scope)
        if route is None:  # answered here: a stranger's path is never a metrics label
            return await _answer(scope, send, 404, "not found")
        if route in UNCOUNTED:
            return await self._guarded(scope, receive, send, headers)
        return await counted(route, self.service_name, send, lambda send: self._guarded(scope, receive, send, headers))

    async def _guarded(self, scope, receive, send, headers: dict[str, str]) -> None:
        """The body rules, then the concurrency limit, then the app with the body replayed."""
        method = scope.get("method", "GET")
        declared = headers.get("content-length", "")
        has_body = (declared.strip() not in ("", "0")) or "transfer-encoding" in headers
        if method in BODYLESS_METHODS:
            if has_body:
                return await _answer(scope, send, 400, f"a {method} request carries no body", close=True)
            return await self._limited(scope, receive, send)
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            too_big = f"request body over {self.max_body_bytes // (1024 * 1024)} MB"
            return await _answer(scope, send, 413, too_big, close=True)
        chunks: list[bytes] = []
        try:
            if (problem := await self._read(receive, chunks)) is not None:
                return await _answer(scope, send, *problem, close=True)
            body = b"".join(chunks)
            chunks = [body]  # the same bytes, still counted in self.buffered until the request ends
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media in FORM_TYPES and (problem_text := await _form_problem(media, headers, body)):
                return await _answer(scope, send, 400, problem_text)  # BentoML answered some with a 500
            replayed = False

            async def replay():
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await self._limited(scope, replay, send)
        finally:
            self.buffered -= sum(map(len, chunks))

    async def _limited(self, scope, receive, send) -> None:
        if scope.get("path") in UNCOUNTED:
            return await self.app(scope, receive, send)
        if self.active >= self.max_concurrency:
            return await _answer(scope, send, 429, "too many requests; retry shortly")
        self.active += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.active -= 1

    async def _read(self, receive, chunks: list[bytes]) -> tuple[int, str] | None:
        """The body into `chunks` (capped: a chunked body may lie about or omit its length), or the error."""
        loop = asyncio.get_running_loop()
        start, size = loop.time(), 0
        while True:
            allowed = min(self.body_timeout_s, self.body_grace_s + size / self.min_body_rate)
            try:
                message = await asyncio.wait_for(receive(), timeout=max(start + allowed - loop.time(), 0.001))
            except TimeoutError:
                return 408, f"request body too slow: {size} bytes in {loop.time() - start:.0f} s"
            if message["type"] == "http.disconnect":  # the client left: the request ends now, nothing waits
                return 400, "client disconnected before sending the whole body"
            chunk = bytes(message.get("body", b""))
            chunks.append(chunk)
            size += len(chunk)
            self.buffered += len(chunk)
            if size > self.max_body_bytes:
                return 413, f"request body over {self.max_body_bytes // (1024 * 1024)} MB"
            if self.buffered > self.buffer_budget:
                return 503, "too many uploads in flight; retry shortly"
            if not message.get("more_body", False):
                return None

    def route(self, scope) -> str | None:
        """The template of the route `scope` would reach (e.g. "/catalog/{entry_id}/image"); None if none."""
        if self._routes is None:
            self._routes = _find_routes(self.app)
            if self._routes is None:
                logger.warning("no router found behind the guard: paths are not checked")
                self._routes = []
        if not self._routes:
            return scope.get("path", "")
        return route_template(self._routes, scope)


def route_template(routes, scope) -> str | None:
    """Starlette routing, by template: what a route table would dispatch `scope` to (a method mismatch still
    names the route: 405 is its answer), through mounts (BentoML mounts the page app at "/")."""
    from starlette.routing import Match, Mount

    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # a route that cannot judge this scope does not take it
            continue
        if match == Match.NONE:
            continue
        if isinstance(route, Mount):
            sub = getattr(route.app, "routes", None)
            if isinstance(sub, list):
                inner = route_template(sub, {**scope, **child})
                if inner is None:
                    continue
                return route.path + inner
            return route.path + "/{path}"
        return getattr(route, "path", None) or "/{route}"
    return None


def _find_routes(app, depth: int = 64) -> list | None:
    """The route table of the Starlette app behind a middleware stack (each layer keeps the next in .app)."""
    for _ in range(depth):
        routes = getattr(app, "routes", None)
        if isinstance(routes, list):
            return routes
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


async def _form_problem(media: str, headers: dict[str, str], body: bytes) -> str | None:
    """What is wrong with a form body, naming the field: the parse, `image` not a file, a file elsewhere."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import FormParser, MultiPartException, MultiPartParser

    if media == "multipart/form-data" and "boundary=" not in headers.get("content-type", ""):
        return "multipart/form-data without a boundary"

    async def stream():
        yield body

    parser: FormParser | MultiPartParser
    if media == "multipart/form-data":
        parser = MultiPartParser(Headers(headers), stream(), max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
    else:
        parser = FormParser(Headers(headers), stream(), max_fields=MAX_FORM_FIELDS)
    try:
        form = await parser.parse()
    except (MultiPartException, ValueError, KeyError, UnicodeDecodeError, AssertionError) as err:
        return f"malformed form body: {str(err)[:200]}"
    try:
        for name, value in form.multi_items():
            if name in FILE_FIELDS:
                if not isinstance(value, UploadFile):  # BentoML would fetch a URL given here
                    return f"{name}: must be a file upload (multipart/form-data with a filename), not a text value"
                if len((value.filename or "").encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES:
                    return f"{name}: filename longer than {MAX_FILENAME_BYTES} bytes"
                if any(unicodedata.category(ch) == "Cc" for ch in value.filename or ""):
                    return f"{name}: filename contains control characters"
            elif isinstance(value, UploadFile):
                expected = " or ".join(repr(f) for f in sorted(FILE_FIELDS))
                return f"{name[:64]!r}: unexpected file upload; send the image as the {expected} field"
    finally:
        await form.close()
    return None


async def _answer(scope, send, status: int, message: str, close: bool = False) -> None:
    """The guard's own answer, JSON {"error": message}; logged, as BentoML's access log never sees it."""
    client = scope.get("client") or ("?", 0)
    path = scope.get("path", "")
    shown = path if len(path) <= 80 else f"{path[:80]}…({len(path)} chars)"
    logger.info("guard: %s %r from %s → %d %s", scope.get("method"), shown, client[0], status, message)
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of the body is not read: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    if status in (429, 503):
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---- logging: a client's mistake is one line


class _ClientErrorFilter(logging.Filter):
    """BentoML logs every failed request with its traceback at ERROR; for a 4xx (the client's mistake) that
    is noise: one INFO line with the status and the message instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (status := _client_status(error)) is not None:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"{record.msg}: %d %s"
            message = " ".join(str(error).split())[:300]  # one line, whatever the client sent
            record.args = (*(record.args if isinstance(record.args, tuple) else ()), status, message)
            record.exc_info, record.exc_text = None, None
        return True


def _client_status(error: BaseException) -> int | None:
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return 400
    if isinstance(error, BentoMLException) and error.error_code.value < 500:
        return int(error.error_code.value)
    return None


def _quiet_client_errors() -> None:
    """A filter on the logger BentoML's log_exception writes to (logging's own extension point)."""
    http_app = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, _ClientErrorFilter) for f in http_app.filters):
        http_app.addFilter(_ClientErrorFilter())
