"""The service's side of listeners: the async calls (the store in a worker thread), the ids a generation
gets, and the HTTP routes (POST /listener, POST /feedback, GET and DELETE /listener/{listener}). The
store is bayes_beats.api.listeners; ids, keys and client addresses are bayes_beats.api.identity."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Path as PathParam
from fastapi import Request  # at module level: the routes' annotations are strings FastAPI resolves here

from bayes_beats.api.identity import (
    Ids,
    NotAListener,
    NotYourTake,
    UnknownGeneration,
    client_address,
    configured_key,
    trusted_proxies,
)
from bayes_beats.api.listeners import ListenerStore, RateLimited, Standing, thompson_taste
from bayes_beats.api.schemas import LISTENER_PATTERN, Feedback, Rendered, RenderRequest
from bayes_beats.model.taste import Taste

log = logging.getLogger("bayes_beats.api.listeners")
ListenerPath = Annotated[
    str, PathParam(pattern=LISTENER_PATTERN, description="the listener's id (issued by POST /listener)")
]


class Listeners:
    """What serving/service.py holds: the store (None when BAYES_BEATS_REQUEST_LOG is "off") and the signer."""

    def __init__(self, store: ListenerStore | None) -> None:
        self.store = store
        self._ids: Ids | None = None

    def start(self) -> Ids:
        """Read the key once, at start-up (sync); a server database without a configured key raises (the
        service does not start). Without a store, or a key file that cannot be written: the configured
        key, else one of this process (its ids verify in this worker only, as they did before)."""
        if self._ids is None:
            try:
                self._ids = self.store.load_key() if self.store is not None else None
            except (OSError, sa.exc.SQLAlchemyError) as err:  # e.g. a read-only folder for the key file
                log.warning("listener store: no shared id key (%s): ids of this worker only", err)
            if self._ids is None:
                self._ids = Ids(configured_key() or os.urandom(32))
        return self._ids

    def listener_key(self, listener: str | None) -> str | None:
        """The listener's key (NotAListener for an id this service did not issue); None for none."""
        return None if listener is None else self.start().listener(listener)

    def ids_for(self, rendered: Rendered, listener: str | None = None) -> list[str]:
        """One fresh id per take, carrying its features and whom it was made for."""
        ids, key = self.start(), self.listener_key(listener)
        features = rendered.features or [None] * len(rendered.wavs)
        return [ids.sign(f if f is not None else [], key) for f in features]

    async def taste_for(self, request: RenderRequest) -> list[float] | None:
        """The listener's Thompson draw for this request; None (anonymous) without votes or a store.
        NotAListener for an id this service did not issue; a store that cannot answer leaves the generation
        anonymous rather than failing it."""
        return await self.taste_of(request.listener, request.seed)

    async def taste_of(self, listener: str | None, seed: int) -> list[float] | None:
        """As taste_for, for a listener and a seed (a stream asks before each segment: votes move it)."""
        if self.listener_key(listener) is None or self.store is None or listener is None:
            return None
        import anyio

        try:
            standing = await anyio.to_thread.run_sync(self.store.standing, listener)
        except sa.exc.SQLAlchemyError as err:
            log.warning("listener store %s: no taste (%s): anonymous generation", self.store.url, err)
            return None
        return thompson_taste(standing.taste, seed)

    async def answer(self, work: Callable[[ListenerStore], dict], status: int = 200) -> Any:
        """`work(store)` in a worker thread, its outcome as the HTTP answer."""
        import anyio
        from fastapi.responses import JSONResponse

        if self.store is None:
            off = "listener store is off (BAYES_BEATS_REQUEST_LOG=off): no votes, no tastes"
            return JSONResponse({"error": off}, status_code=503)
        try:
            result = await anyio.to_thread.run_sync(work, self.store)
        except NotAListener as err:
            return JSONResponse({"error": f"listener: {err}"}, status_code=400)
        except UnknownGeneration:
            return JSONResponse({"error": "unknown generation id"}, status_code=404)
        except NotYourTake as err:
            return JSONResponse({"error": str(err)}, status_code=403)
        except RateLimited as err:
            retry = str(max(1, int(err.retry_after_s)))
            return JSONResponse({"error": str(err)}, status_code=429, headers={"Retry-After": retry})
        except sa.exc.SQLAlchemyError as err:
            log.warning("listener store %s: %s", self.store.url, str(err).splitlines()[0])
            return JSONResponse(
                {"error": "listener store unavailable; retry shortly"}, status_code=503, headers={"Retry-After": "1"}
            )
        return JSONResponse(result, status_code=status)


@cache
def _proxies() -> Any:
    return trusted_proxies()


def client_of(request: Request) -> str:
    """The client's address (X-Forwarded-For believed only from BAYES_BEATS_TRUSTED_PROXIES)."""
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), _proxies())


def listener_routes(app: Any, listeners: Listeners) -> None:
    """POST /listener, POST /feedback, GET and DELETE /listener/{listener} on the service's FastAPI app; a
    malformed body or path is a 400 {"error": ...} naming the field, as BentoML's own endpoints answer."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    client = client_of

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Any, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in err.errors()
        )
        return JSONResponse({"error": problems[:1000]}, status_code=400)

    async def new_listener(request: Request) -> Any:
        """A new listener id (a secret: keep it; it is how the service knows your votes) → 201."""
        who = client(request)
        return await listeners.answer(lambda store: Standing(store.issue(who), Taste.prior()).to_dict(), status=201)

    async def feedback(body: Feedback, request: Request) -> Any:
        """A vote on a take made for this listener: {listener, id (a variation's), vote: 1 | -1} → the
        listener's votes and taste. A second vote on the same take replaces the first."""
        who = client(request)
        return await listeners.answer(
            lambda store: (
                store.vote(body.listener, body.id, body.vote, who).to_dict() | {"id": body.id, "vote": body.vote}
            )
        )

    async def listener(listener: ListenerPath) -> Any:
        """The listener's votes and taste (per feature: posterior mean and sd; the prior without votes)."""
        return await listeners.answer(lambda store: store.standing(listener).to_dict())

    async def forget(listener: ListenerPath) -> Any:
        """Delete everything about the listener: their next generation is the anonymous one."""
        return await listeners.answer(
            lambda store: {"deleted": store.forget(listener)} | Standing(listener, Taste.prior()).to_dict()
        )

    app.add_api_route("/listener", new_listener, methods=["POST"])
    app.add_api_route("/feedback", feedback, methods=["POST"])
    app.add_api_route("/listener/{listener}", listener, methods=["GET"])
    app.add_api_route("/listener/{listener}", forget, methods=["DELETE"])
