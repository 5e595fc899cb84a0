"""What the service speaks: request/response schemas, WAV encoding and request-guarding middleware.
Kept out of serving/service.py so that file stays a thin BentoML wrapper and this is testable alone."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bayes_beats.model.plans import DEFAULT_TEMPERATURE
from bayes_beats.model.taste import check_vote
from bayes_beats.music.audio import wav_bytes
from bayes_beats.music.theory import KEYSCALE_PATTERN

# a listener id as the service issues it (POST /listener; api.identity): base64url(16 random bytes) "." tag
LISTENER_PATTERN = r"^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{22}$"
MAX_ID_CHARS = 256  # a generation id (identity.Ids.sign: ~140 characters)
GENERATION_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"  # body "." tag, base64url: ASCII only

# The API's request limits, declared once: RenderRequest is what POST /generate takes (its OpenAPI schema)
# and what the renderer receives; the image endpoint reuses these types. They sit within the generator's
# own limits (ModelParams, per profile), which the API checks too (`RenderRequest.beyond`).
PROMPT_MAX_CHARS = 500
Prompt = Annotated[str, Field(min_length=1, max_length=PROMPT_MAX_CHARS, description="the vibe, in words")]
Caption = Annotated[str, Field(max_length=PROMPT_MAX_CHARS, description="added to the image's own caption")]
DurationS = Annotated[float, Field(ge=1.0, le=30.0, description="seconds of audio (the profile may narrow this)")]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
NumVariations = Annotated[int, Field(ge=1, le=4, description="variational samples of the same vibe")]
Temperature = Annotated[
    float,
    Field(ge=0.0, le=2.0, description="how far takes spread over the vibe's plan: 0 its mode, 1 its calibrated spread"),
]
Bpm = Annotated[float | None, Field(ge=40, le=220, description="fix the tempo instead of the planner's")]
Keyscale = Annotated[str | None, Field(pattern=KEYSCALE_PATTERN, description='fix the key, e.g. "A minor"')]
Energy = Annotated[
    float | None, Field(ge=0.0, le=1.0, description="fix the energy: a percentile of the corpus's (0 calm, 1 intense)")
]
Listener = Annotated[
    str | None,
    Field(
        pattern=LISTENER_PATTERN,
        description="who listens: an id from POST /listener (their votes tilt the plan, and only they can "
        "vote on the takes); none = anonymous",
    ),
]


class SegmentJob(BaseModel):
    """One stream's next segment, as the renderer receives it: the stream's cursor (model.radio.Cursor) and
    the listener's taste draw (None: anonymous)."""

    cursor: dict
    taste: list[float] | None = None


STREAM_FORMATS = ("mp3", "ogg", "wav")


class RenderRequest(BaseModel):
    """One generation: what /generate takes and what the batching renderer receives."""

    # BentoML serves a subclass of it: its 400 then reads "validation error for RenderRequest", detail per field
    model_config = ConfigDict(title="RenderRequest")

    prompt: Prompt
    duration_s: DurationS = 10.0
    seed: Seed = 0
    num_variations: NumVariations = 1
    temperature: Temperature = DEFAULT_TEMPERATURE
    bpm: Bpm = None
    keyscale: Keyscale = None
    energy: Energy = None
    listener: Listener = None

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, prompt: str) -> str:
        import unicodedata

        if not prompt.strip():
            raise ValueError("prompt is blank")
        # what a reader cannot see must not steer the model or the request log: C0/C1 controls (U+0085 …),
        # bidirectional overrides and isolates (U+202E …), zero-width and other format characters, lone
        # surrogates, line/paragraph separators. Tab and newline stay; so do ZWNJ/ZWJ (scripts, emoji sequences).
        for i, ch in enumerate(prompt):
            category = unicodedata.category(ch)
            if category in ("Cc", "Cf", "Cs", "Zl", "Zp") and ch not in "\t\n\u200c\u200d":
                raise ValueError(f"prompt contains an invisible or control character, U+{ord(ch):04X} at position {i}")
        return prompt.strip()

    def beyond(self, limits: Mapping[str, Any]) -> str | None:
        """What the generator would refuse, naming the field, given its limits (ModelParams fields)."""
        if len(self.prompt) > limits.get("max_prompt_chars", len(self.prompt)):
            return f"prompt: longer than {limits['max_prompt_chars']} characters on the {limits.get('profile')} profile"
        checks = [
            ("duration_s", self.duration_s, limits.get("min_seconds"), limits.get("max_seconds")),
            ("num_variations", self.num_variations, 1, limits.get("max_variations")),
            ("temperature", self.temperature, 0, limits.get("max_temperature")),
            ("bpm", self.bpm, limits.get("min_bpm"), limits.get("max_bpm")),
        ]
        for name, value, low, high in checks:
            if value is None or low is None or high is None or low <= value <= high:
                continue
            return f"{name}: must be within [{low}, {high}] on the {limits.get('profile')} profile"
        return None

    def group_key(self) -> tuple:
        """Requests with equal keys go through the pipeline as one batch (prompts and seeds may differ)."""
        return (self.duration_s, self.num_variations, self.temperature, self.bpm, self.keyscale, self.energy)


class RenderJob(RenderRequest):
    """What the renderer receives: the request plus the listener's taste (a posterior draw in
    `plans.FEATURES` order that tilts the plan; None = anonymous). Set by the API, never by a client."""

    model_config = ConfigDict(title="RenderJob")

    taste: list[float] | None = Field(None, min_length=3, max_length=3)

    def group_key(self) -> tuple:
        return (*super().group_key(), tuple(self.taste) if self.taste is not None else None)


class Rendered(BaseModel):
    sample_rate: int
    wavs: list[str]  # base64 WAV per variation
    bpm: list[float]
    keyscale: list[str]
    energy: list[float]
    model_version: str
    features: list[list[float] | None] = []  # per take, its taste features (plans.FEATURES)
    plan: dict | None = None  # the summary of the (first) take's plan; None for a model without one


class Feedback(BaseModel):
    """POST /feedback: a listener's vote on a take (its variation id)."""

    model_config = ConfigDict(title="Feedback", extra="forbid")

    listener: Annotated[str, Field(pattern=LISTENER_PATTERN)]
    id: Annotated[str, Field(min_length=3, max_length=MAX_ID_CHARS, pattern=GENERATION_PATTERN)]
    vote: Annotated[int, Field(strict=True, description="1 (up) or -1 (down)")]

    @field_validator("vote")
    @classmethod
    def _up_or_down(cls, vote: int) -> int:
        return check_vote(vote)


def request_limits() -> dict[str, dict[str, Any]]:
    """The request fields' bounds (from RenderRequest's schema), for the page: GET /limits."""
    out: dict[str, dict[str, Any]] = {}
    for name, field in RenderRequest.model_json_schema()["properties"].items():
        variants = field.get("anyOf", [field])
        bounds = {
            k: v
            for variant in variants
            for k, v in variant.items()
            if k in ("minimum", "maximum", "minLength", "maxLength", "pattern", "default")
        }
        if "default" in field:
            bounds["default"] = field["default"]
        out[name] = bounds
    return out


def encode_wav(audio: np.ndarray, sample_rate: int) -> str:
    return base64.b64encode(wav_bytes(audio, sample_rate)).decode("ascii")


def variations_json(rendered: Rendered, ids: list[str], listener: str | None = None, **extra: object) -> dict:
    """The JSON answer: per variation its id (for /feedback), plan and features and WAV; the vibe's plan."""
    features = rendered.features or [None] * len(rendered.wavs)
    answer = {
        "sample_rate": rendered.sample_rate,
        "model_version": rendered.model_version,
        "variations": [
            {"id": id_, "wav_base64": wav, "bpm": bpm, "keyscale": key, "energy": energy, "features": feats}
            for id_, wav, bpm, key, energy, feats in zip(
                ids, rendered.wavs, rendered.bpm, rendered.keyscale, rendered.energy, features, strict=True
            )
        ],
        "plan": rendered.plan,
        **extra,
    }
    return answer | ({"listener": listener} if listener else {})


def render_batch(generator: Any, requests: Sequence[RenderJob | RenderRequest], version: str) -> list[Rendered]:
    """The renderer's batch: requests that share duration/variations/temperature/bpm/key/energy/taste go
    through `generator` (a bayes_beats.model.generate.Generator) as one call, whatever their prompts and seeds."""
    out: list[Rendered | None] = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.group_key(), []).append(i)
    sr = generator.sample_rate
    for indices in groups.values():
        first = requests[indices[0]]
        taste = getattr(first, "taste", None)  # (a plain RenderRequest in-process: anonymous)
        audio, plans = generator.generate_with_plans(  # plans returned, not read from shared state
            [requests[i].prompt for i in indices],
            first.duration_s,
            [requests[i].seed for i in indices],
            num_variations=first.num_variations,
            temperature=first.temperature,
            bpm=first.bpm,
            keyscale=first.keyscale,
            energy=first.energy,
            **({"taste": taste} if taste is not None else {}),
        )
        for row, i in enumerate(indices):
            mine = plans[row * first.num_variations : (row + 1) * first.num_variations]
            out[i] = Rendered(
                sample_rate=sr,
                wavs=[encode_wav(a, sr) for a in audio[row]],
                bpm=[round(p["bpm"], 1) for p in mine],
                keyscale=[p["keyscale"] for p in mine],
                energy=[round(p["energy"], 3) for p in mine],
                model_version=version,
                features=[p.get("features") for p in mine],
                plan=mine[0].get("plan"),
            )
    return [r for r in out if r is not None]
