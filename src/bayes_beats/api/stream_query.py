"""GET /stream's query → an open (or resumed) stream and its encoder: the checks /generate's body has, the
three sources of a vibe (a prompt, a catalog picture, a /vibe token), a resume (docs/design.md "The stream")."""

from __future__ import annotations

from typing import Any

import anyio

from bayes_beats.api.encoder import FORMATS, AudioEncoder
from bayes_beats.api.stream import Stream, StreamHub, StreamLimit

QUERY = {
    "prompt",
    "catalog",
    "vibe",
    "listener",
    "seed",
    "bpm",
    "keyscale",
    "energy",
    "temperature",
    "format",
    "resume",
}


async def stream_request(
    hub: StreamHub, query: dict, client: str, limits: dict, catalog: Any, listeners: Any
) -> tuple[Stream, AudioEncoder]:
    """GET /stream's query → an open (or resumed) stream and its encoder. ValueError: a bad parameter (400);
    LookupError: an unknown catalog id or stream (404); StreamLimit: too many streams (429)."""
    from pydantic import ValidationError

    from bayes_beats.api.identity import NotAListener
    from bayes_beats.api.imagevibe import ImageError, vibe_from_bytes
    from bayes_beats.api.schemas import RenderRequest

    if unknown := sorted(set(query) - QUERY):
        raise ValueError(f"unknown parameter(s) {', '.join(u[:40] for u in unknown[:5])}; allowed: {sorted(QUERY)}")
    rate = int(limits["sample_rate"])
    if resume := query.get("resume"):
        stream = hub.get(resume)
        if stream is None or stream.ended is not None:
            raise LookupError("unknown stream id (or it ended): start a new stream")
        if stream.attached:
            raise StreamLimit("this stream is playing on another connection")
        return stream, AudioEncoder(stream.fmt, rate, hub.settings.mp3_compression)
    fmt = query.get("format", "mp3")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt[:20]!r}")
    sources = [k for k in ("prompt", "catalog", "vibe") if query.get(k)]
    if len(sources) != 1:
        raise ValueError("give exactly one of prompt, catalog (an id of GET /catalog) or vibe (a token of /vibe)")
    vibe: dict | None = None
    if sources == ["catalog"]:
        entry = catalog.get(query["catalog"][:64])
        if entry is None:
            raise LookupError(f"unknown catalog id {query['catalog'][:64]!r}")
        try:
            read = (await anyio.to_thread.run_sync(vibe_from_bytes, entry.image)).to_dict()
        except ImageError as err:
            raise ValueError(f"catalog image: {err}") from None
        vibe = {k: read[k] for k in ("caption", "valence", "arousal")} | {"catalog": entry.id}
        text = f"{read['caption']}. {entry.caption}"[:500]
    elif sources == ["vibe"]:
        vibe = listeners.start().vibe(query["vibe"])  # ValueError for a token this service did not sign
        text = str(vibe["caption"])
    else:
        text = query["prompt"]
    fields = {k: query[k] for k in ("seed", "temperature", "bpm", "keyscale", "energy", "listener") if k in query}
    try:
        request = RenderRequest(prompt=text, **fields)
    except ValidationError as err:
        raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())) from None
    if problem := request.beyond(limits):
        raise ValueError(problem)
    try:
        listeners.listener_key(request.listener)
    except NotAListener as err:
        raise ValueError(f"listener: {err}") from None
    cursor = {
        "prompt": request.prompt,
        "seed": request.seed,
        "temperature": request.temperature,
        "bpm_fixed": request.bpm,
        "keyscale_fixed": request.keyscale,
        "energy_fixed": request.energy,
    }
    stream = hub.open(cursor, request.listener, client, fmt, vibe)
    return stream, AudioEncoder(fmt, rate, hub.settings.mp3_compression)
