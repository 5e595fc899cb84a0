"""What the service speaks: request/response schemas, WAV encoding and request-guarding middleware.
Kept out of serving/service.py so that file stays a thin BentoML wrapper and this is testable alone."""

from __future__ import annotations

import base64
import hmac
import io
import json
import os

import numpy as np
import soundfile as sf
from pydantic import BaseModel, Field, field_validator

KEYSCALE_PATTERN = r"^(C|C#|D|D#|E|F|F#|G|G#|A|A#|B) (major|minor)$"
PUBLIC_PATHS = {"/", "/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/schema.json"}
PUBLIC_PREFIXES = ("/static/", "/catalog", "/assets/", "/static_content/")
MAX_BODY_BYTES = 11 * 1024 * 1024  # a 10 MB image plus multipart overhead


class RenderRequest(BaseModel):
    """One generation: what /generate takes and what the batching renderer receives."""

    prompt: str = Field(min_length=1, max_length=500, description="the vibe, in words")
    duration_s: float = Field(10.0, ge=1.0, le=30.0, description="seconds of audio (the profile may narrow this)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    num_variations: int = Field(1, ge=1, le=4, description="variational samples of the same vibe")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = the deterministic mean embedding")
    bpm: float | None = Field(None, ge=40, le=220)
    keyscale: str | None = Field(None, pattern=KEYSCALE_PATTERN)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("prompt is blank")
        if any(ord(ch) < 32 and ch not in "\t\n" for ch in prompt):
            raise ValueError("prompt contains control characters")
        return prompt.strip()

    def group_key(self) -> tuple:
        """Requests with equal keys go through the pipeline as one batch (prompts and seeds may differ)."""
        return (self.duration_s, self.num_variations, self.temperature, self.bpm, self.keyscale)


class Rendered(BaseModel):
    sample_rate: int
    wavs: list[str]  # base64 WAV per variation
    bpm: list[float]
    keyscale: list[str]
    model_version: str


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """[channels, samples] float → 16-bit PCM WAV."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio.T, -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def encode_wav(audio: np.ndarray, sample_rate: int) -> str:
    return base64.b64encode(wav_bytes(audio, sample_rate)).decode("ascii")


def variations_json(rendered: Rendered, **extra: object) -> dict:
    return {
        "sample_rate": rendered.sample_rate,
        "model_version": rendered.model_version,
        "variations": [
            {"wav_base64": wav, "bpm": bpm, "keyscale": key}
            for wav, bpm, key in zip(rendered.wavs, rendered.bpm, rendered.keyscale, strict=True)
        ],
        **extra,
    }


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
