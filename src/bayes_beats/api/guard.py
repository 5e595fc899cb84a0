"""ASGI request guard: body caps, API key, malformed multipart → 4xx before BentoML sees the request."""

from __future__ import annotations

import hmac
import json
import os

PUBLIC_PATHS = {"/", "/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/schema.json"}

PUBLIC_PREFIXES = ("/static/", "/catalog", "/assets/", "/static_content/")

MAX_BODY_BYTES = 11 * 1024 * 1024  # a 10 MB image plus multipart overhead


class GuardMiddleware:
    """ASGI: caps request bodies (413) and, when BAYES_BEATS_API_KEY is set, asks for it (401) on the API.
    Health, metrics, the page and the catalog stay public."""

    def __init__(self, app, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.api_key = os.environ.get("BAYES_BEATS_API_KEY", "")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if self.api_key and path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
            given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return await _error(send, 401, "missing or wrong API key (header X-API-Key)")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _error(send, 413, f"request body over {self.max_body_bytes // (1024 * 1024)} MB")
        body = bytearray()
        while True:  # buffer the (capped) body: a chunked body may lie about or omit its length
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return await _error(send, 413, f"request body over {self.max_body_bytes // (1024 * 1024)} MB")
            if not message.get("more_body", False):
                break
        if headers.get("content-type", "").startswith("multipart/") and (
            problem := await _multipart_problem(headers, bytes(body))
        ):
            return await _error(send, 400, problem)  # BentoML would answer a malformed form with a 500
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return await self.app(scope, replay, send)


async def _multipart_problem(headers: dict[str, str], body: bytes) -> str | None:
    from starlette.datastructures import Headers
    from starlette.formparsers import MultiPartException, MultiPartParser

    if "boundary=" not in headers.get("content-type", ""):
        return "multipart/form-data without a boundary"

    async def stream():
        yield body

    try:
        form = await MultiPartParser(Headers(headers), stream()).parse()
        await form.close()
    except (MultiPartException, ValueError, KeyError, UnicodeDecodeError) as err:
        return f"malformed multipart body: {err}"
    return None


async def _error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
