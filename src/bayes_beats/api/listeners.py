"""Listeners: their votes on takes, their taste (a posterior over `plans.FEATURES`), generation ids.

One table, `votes` (listener, generation id, the take's features, vote ±1, ts), in the request log's
database (BAYES_BEATS_REQUEST_LOG: SQLite locally, Postgres in production), is the single source of truth:
a listener's taste is `Taste.from_votes` over their votes in insertion order, so concurrent voters never
lose an update and forgetting a listener is one DELETE. A second table, `secrets`, keeps the key that signs
generation ids when BAYES_BEATS_SECRET is not set (created once, insert-if-absent: every worker and every
restart signs with the same key).

Generation ids are tokens, not rows: urlsafe base64 of {features, nonce} plus an HMAC tag, so a generation
never writes to (or waits on) the database, and /feedback reads the take's features back from the id
itself. An id whose tag does not verify is unknown (404). Votes are rate-limited per listener (RATE_LIMIT
in the last RATE_WINDOW_S seconds, counted in the table, under a per-listener lock: SQLite's BEGIN
IMMEDIATE, Postgres's advisory transaction lock).

Every method here is synchronous and may wait on the database: the service calls them in a worker
thread, never on its event loop."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from fastapi import Path as PathParam

from bayes_beats.api import requestlog
from bayes_beats.api.requestlog import database_url
from bayes_beats.api.schemas import LISTENER_PATTERN, MAX_ID_CHARS, Feedback, Rendered, RenderRequest
from bayes_beats.model.plans import FEATURES
from bayes_beats.model.taste import Taste, check_vote

log = logging.getLogger(__name__)

RATE_LIMIT = int(os.environ.get("BAYES_BEATS_VOTE_RATE", "120"))  # votes per listener per RATE_WINDOW_S
RATE_WINDOW_S = 60.0
SECRET_ENV = "BAYES_BEATS_SECRET"
SECRET_NAME = "generation_ids"
TAG_BYTES = 16
ListenerPath = Annotated[str, PathParam(pattern=LISTENER_PATTERN, description="the listener's opaque name")]

metadata = sa.MetaData()
votes_table = sa.Table(
    "votes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # insertion order: the posterior's
    sa.Column("listener", sa.String(64), nullable=False),
    sa.Column("generation", sa.String(MAX_ID_CHARS), nullable=False),
    *(sa.Column(name, sa.Float, nullable=False) for name in FEATURES),
    sa.Column("vote", sa.SmallInteger, nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Index("ix_votes_listener_id", "listener", "id"),
)
secrets_table = sa.Table(
    "secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)


class UnknownGeneration(LookupError):
    """An id that is not one of ours (its tag does not verify): the answer is 404."""


class RateLimited(Exception):
    """Too many votes from one listener in the window: the answer is 429."""


@dataclass(frozen=True)
class Standing:
    """A listener's votes and posterior, as the API answers them."""

    listener: str
    taste: Taste

    def to_dict(self) -> dict:
        return {"listener": self.listener, "votes": self.taste.votes, "taste": self.taste.summary()}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class GenerationIds:
    """Signs a take's features into an opaque id and reads them back; pure, no I/O."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def _tag(self, body: str) -> str:
        return _b64(hmac.new(self.key, body.encode("ascii"), hashlib.sha256).digest()[:TAG_BYTES])

    def sign(self, features: Sequence[float]) -> str:
        payload = {"f": [round(float(v), 6) for v in features], "n": secrets.token_hex(8)}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._tag(body)}"

    def features(self, token: str) -> np.ndarray:
        """The take's features; UnknownGeneration for anything this key did not sign."""
        body, _, tag = token.partition(".")
        if not body or len(token) > MAX_ID_CHARS or not hmac.compare_digest(tag, self._tag(body)):
            raise UnknownGeneration("unknown generation id")
        try:
            features = np.asarray(json.loads(_unb64(body))["f"], dtype=float)
        except (ValueError, KeyError, TypeError) as err:  # signed by us but not a take's: never expected
            raise UnknownGeneration(f"generation id without features: {err}") from None
        if features.shape != (len(FEATURES),) or not np.all(np.isfinite(features)):
            raise UnknownGeneration("generation id without a take's features")
        return features


def listener_lock_key(listener: str) -> int:
    """A stable signed 64-bit key for Postgres's advisory lock on one listener."""
    return int.from_bytes(hashlib.sha256(listener.encode()).digest()[:8], "big", signed=True)


class ListenerStore:
    """The votes table (and the id key) in the request log's database; thread-safe, lazily connected."""

    def __init__(self, location: str, timeout_s: float = 5.0, rate_limit: int = RATE_LIMIT) -> None:
        self.url = database_url(location)
        self.timeout_s, self.rate_limit = timeout_s, rate_limit
        self.sqlite = self.url.startswith("sqlite")
        self._engine: sa.Engine | None = None
        self._lock = threading.Lock()
        self._ids: GenerationIds | None = None

    # ---- connection

    def engine(self) -> sa.Engine:
        with self._lock:
            if self._engine is None:
                self._engine = self._create_engine()
            return self._engine

    def _create_engine(self) -> sa.Engine:
        engine = requestlog.open_engine(self.url, self.timeout_s)
        if self.sqlite:

            @sa.event.listens_for(engine, "connect")
            def _autocommit_driver(dbapi_connection: Any, record: Any) -> None:
                dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below, not pysqlite's deferred one
                dbapi_connection.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")

            @sa.event.listens_for(engine, "begin")
            def _begin(connection: sa.Connection) -> None:
                # a writer takes the write lock first: its read (the rate count) and write are one step
                write = connection.get_execution_options().get("write", False)
                connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        for attempt in range(3):  # two workers creating the tables at once: one of them loses, then sees them
            try:
                # the request log's table too: whoever opens the database first makes all of it (a reader of
                # the log never finds the file without its table)
                requestlog.metadata.create_all(engine)
                metadata.create_all(engine)
                break
            except sa.exc.DBAPIError:
                if attempt == 2:
                    raise
        return engine

    def _writing(self) -> Any:
        return self.engine().execution_options(write=True).begin()

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    # ---- generation ids

    def load_key(self) -> GenerationIds:
        """The id signer: BAYES_BEATS_SECRET, else the key in the database (created there once)."""
        if self._ids is not None:
            return self._ids
        configured = os.environ.get(SECRET_ENV, "")
        key = configured.encode() if configured else _unb64(self._stored_secret())
        self._ids = GenerationIds(key)
        return self._ids

    def _stored_secret(self) -> str:
        query = sa.select(secrets_table.c.value).where(secrets_table.c.name == SECRET_NAME)
        with self.engine().connect() as connection:
            found = connection.execute(query).scalar()
        if found is not None:
            return str(found)
        try:
            with self._writing() as connection:
                connection.execute(secrets_table.insert(), [{"name": SECRET_NAME, "value": _b64(os.urandom(32))}])
        except sa.exc.IntegrityError:  # another worker created it first: use theirs
            pass
        with self.engine().connect() as connection:
            return str(connection.execute(query).scalar_one())

    # ---- votes

    def _votes(self, connection: sa.Connection, listener: str) -> Taste:
        columns = [votes_table.c[name] for name in FEATURES]
        query = (
            sa.select(*columns, votes_table.c.vote).where(votes_table.c.listener == listener).order_by(votes_table.c.id)
        )
        rows = connection.execute(query).all()
        return Taste.from_votes((np.array(row[:-1], dtype=float), int(row[-1])) for row in rows)

    def standing(self, listener: str) -> Standing:
        """The listener's posterior over all their votes (the prior when they have none)."""
        with self.engine().connect() as connection:
            return Standing(listener, self._votes(connection, listener))

    def vote(self, listener: str, generation: str, vote: int, now: datetime | None = None) -> Standing:
        """Record one vote on a take and answer the posterior after it. UnknownGeneration for a forged or
        foreign id, RateLimited over the rate; ValueError for a vote that is not ±1."""
        check_vote(vote)
        features = self.load_key().features(generation)
        now = now or datetime.now(UTC)
        with self._writing() as connection:
            if not self.sqlite:  # one listener's votes one at a time: the rate count cannot race past the limit
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(listener_lock_key(listener))))
            recent = connection.execute(
                sa.select(sa.func.count())
                .select_from(votes_table)
                .where(votes_table.c.listener == listener)
                .where(votes_table.c.ts >= now - timedelta(seconds=RATE_WINDOW_S))
            ).scalar_one()
            if recent >= self.rate_limit:
                raise RateLimited(f"over {self.rate_limit} votes in {RATE_WINDOW_S:.0f} s: slow down")
            row = {"listener": listener, "generation": generation, "vote": int(vote), "ts": now}
            connection.execute(votes_table.insert(), [row | dict(zip(FEATURES, map(float, features), strict=True))])
            return Standing(listener, self._votes(connection, listener))

    def forget(self, listener: str) -> int:
        """Delete every row about the listener; how many there were."""
        with self._writing() as connection:
            return int(connection.execute(votes_table.delete().where(votes_table.c.listener == listener)).rowcount)


def thompson_taste(taste: Taste, seed: int) -> list[float] | None:
    """One posterior draw for a generation (seeded by the request's seed and the vote count, so a request
    is reproducible until the listener votes again); None for a listener without votes (anonymous)."""
    if taste.votes == 0:
        return None
    return [float(v) for v in taste.sample(np.random.default_rng([seed, taste.votes]))]


def read_votes(location: str, since_hours: float | None = None) -> pd.DataFrame | None:
    """The votes (all, or those of the last `since_hours`), oldest first; None when the database has no
    votes table (a service that never got feedback)."""
    url = database_url(location)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    engine = sa.create_engine(url)
    try:
        if not sa.inspect(engine).has_table(votes_table.name):
            return None
        query = sa.select(votes_table.c.listener, votes_table.c.vote, votes_table.c.ts).order_by(votes_table.c.id)
        if since_hours is not None:
            query = query.where(votes_table.c.ts >= datetime.now(UTC) - timedelta(hours=since_hours))
        with engine.connect() as connection:
            frame = pd.read_sql(query, connection)
    finally:
        engine.dispose()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)  # SQLite gives naive UTC datetimes back
    return frame


# ---- the service's side: async calls (the store in a worker thread), ids, and the HTTP routes


class Listeners:
    """What serving/service.py holds: the store (None when BAYES_BEATS_REQUEST_LOG is "off") and the id signer."""

    def __init__(self, store: ListenerStore | None) -> None:
        self.store = store
        self._ids: GenerationIds | None = None

    def start(self) -> GenerationIds:
        """Read the id key once, at start-up (sync). Without a store, or with its database unreachable, the
        ids are signed with a key of this process alone (BAYES_BEATS_SECRET, else random): feedback on them
        then answers 503 (no store) or 404."""
        if self._ids is None:
            try:
                if self.store is None:
                    raise LookupError("no listener store")
                self._ids = self.store.load_key()
            except Exception as err:
                if self.store is not None:
                    log.warning(
                        "listener store %s: no generation-id key (%s): ids of this worker only", self.store.url, err
                    )
                self._ids = GenerationIds(os.environ.get(SECRET_ENV, "").encode() or os.urandom(32))
        return self._ids

    def ids_for(self, rendered: Rendered) -> list[str]:
        """One fresh id per take, carrying its features (none for a model without a plan)."""
        ids = self.start()
        features = rendered.features or [None] * len(rendered.wavs)
        return [ids.sign(f if f is not None else []) for f in features]

    async def taste_for(self, request: RenderRequest) -> list[float] | None:
        """The named listener's Thompson draw for this request; None (anonymous) without votes or a store.
        A store that cannot answer leaves the generation anonymous rather than failing it."""
        if request.listener is None or self.store is None:
            return None
        import anyio

        try:
            standing = await anyio.to_thread.run_sync(self.store.standing, request.listener)
        except sa.exc.SQLAlchemyError as err:
            log.warning("listener store %s: no taste (%s): anonymous generation", self.store.url, err)
            return None
        return thompson_taste(standing.taste, request.seed)

    async def answer(self, work: Callable[[ListenerStore], dict]) -> Any:
        """`work(store)` in a worker thread, its outcome as the HTTP answer."""
        import anyio
        from fastapi.responses import JSONResponse

        if self.store is None:
            off = "listener store is off (BAYES_BEATS_REQUEST_LOG=off): no votes, no tastes"
            return JSONResponse({"error": off}, status_code=503)
        try:
            result = await anyio.to_thread.run_sync(work, self.store)
        except UnknownGeneration:
            return JSONResponse({"error": "unknown generation id"}, status_code=404)
        except RateLimited as err:
            return JSONResponse({"error": str(err)}, status_code=429, headers={"Retry-After": str(int(RATE_WINDOW_S))})
        except sa.exc.SQLAlchemyError as err:
            log.warning("listener store %s: %s", self.store.url, str(err).splitlines()[0])
            return JSONResponse(
                {"error": "listener store unavailable; retry shortly"}, status_code=503, headers={"Retry-After": "1"}
            )
        return JSONResponse(result)


def listener_routes(app: Any, listeners: Listeners) -> None:
    """POST /feedback, GET and DELETE /listener/{listener} on the service's FastAPI app; a malformed body or
    path is a 400 {"error": ...} naming the field, as BentoML's own endpoints answer."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Any, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in err.errors()
        )
        return JSONResponse({"error": problems[:1000]}, status_code=400)

    async def feedback(body: Feedback) -> Any:
        """A vote on a take: {listener, id (a variation's), vote: 1 | -1} → the listener's votes and taste."""
        return await listeners.answer(
            lambda store: store.vote(body.listener, body.id, body.vote).to_dict() | {"id": body.id, "vote": body.vote}
        )

    async def listener(listener: ListenerPath) -> Any:
        """The listener's votes and taste (per feature: posterior mean and sd; the prior without votes)."""
        return await listeners.answer(lambda store: store.standing(listener).to_dict())

    async def forget(listener: ListenerPath) -> Any:
        """Delete everything about the listener: their next generation is the anonymous one."""
        return await listeners.answer(
            lambda store: Standing(listener, Taste.prior()).to_dict() | {"deleted": store.forget(listener)}
        )

    app.add_api_route("/feedback", feedback, methods=["POST"])
    app.add_api_route("/listener/{listener}", listener, methods=["GET"])
    app.add_api_route("/listener/{listener}", forget, methods=["DELETE"])
