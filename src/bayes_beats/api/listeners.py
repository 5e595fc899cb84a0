"""Listeners: their votes on takes, their taste (a posterior over `plans.FEATURES`), and the limits.

A listener is an id the service issued (`POST /listener`; bayes_beats.api.identity: 128 random bits and
an HMAC tag, verified without a lookup). The votes table (listener key, generation id, the take's
features, vote ±1, ts), in the request log's database (BAYES_BEATS_REQUEST_LOG: SQLite locally, Postgres
in production), is the single source of truth: a listener's taste is `Taste.from_votes` over their votes
in insertion order, so concurrent voters never lose an update and forgetting a listener is one DELETE.
One vote per listener and take: voting a take again replaces the earlier vote.

Limits (params.yaml `listeners`), counted in the same write transaction as the vote, under a lock (SQLite's
BEGIN IMMEDIATE; Postgres's advisory transaction locks on the client, then the listener): votes per
listener and per client address in the window, new listener ids per client address per hour (both from
`client_events`, rows that live an hour at most), a listener's latest `max_votes_per_listener` votes kept
and votes older than `retention_days` deleted.

Every method here is synchronous and may wait on the database: the service calls them in a worker
thread, never on its event loop."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from bayes_beats.api import requestlog
from bayes_beats.api.identity import Ids, NotYourTake, key_for
from bayes_beats.api.requestlog import database_url
from bayes_beats.api.schemas import MAX_ID_CHARS
from bayes_beats.core.config import ListenersParams
from bayes_beats.model.plans import FEATURES
from bayes_beats.model.taste import Taste, check_vote

log = logging.getLogger(__name__)

ISSUE_WINDOW_S = 3600.0  # new listener ids are counted per client over the last hour
LISTENER_KEY_CHARS = 22  # what the votes table stores of a listener id: its random body (16 bytes, base64url)

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
# what the limits count: (subject, kind, ts) with subject a client address or a listener key and kind
# "vote" or "listener"; a row lives as long as the longest window (an hour), pruned on each write
events_table = sa.Table(
    "client_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Index("ix_client_events_subject", "subject", "kind", "ts"),
)


class RateLimited(Exception):
    """Over a limit (a listener's or a client's): the answer is 429 with Retry-After."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Standing:
    """A listener's votes and posterior, as the API answers them."""

    listener: str
    taste: Taste

    def to_dict(self) -> dict:
        return {"listener": self.listener, "votes": self.taste.votes, "taste": self.taste.summary()}


def lock_key(subject: str) -> int:
    """A stable signed 64-bit key for Postgres's advisory lock on one client or listener."""
    return int.from_bytes(hashlib.sha256(subject.encode()).digest()[:8], "big", signed=True)


def with_env(limits: ListenersParams) -> ListenersParams:
    """The params' limits, with BAYES_BEATS_VOTE_RATE (an operator's override) applied."""
    if rate := os.environ.get("BAYES_BEATS_VOTE_RATE"):
        return limits.model_copy(update={"vote_rate": int(rate)})
    return limits


class ListenerStore:
    """The votes and the limits' events in the request log's database; thread-safe, lazily connected."""

    def __init__(self, location: str, limits: ListenersParams, timeout_s: float = 5.0) -> None:
        self.url = database_url(location)
        self.limits, self.timeout_s = limits, timeout_s
        self.sqlite = self.url.startswith("sqlite")
        self._engine: sa.Engine | None = None
        self._lock = threading.Lock()
        self._ids: Ids | None = None

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
                # a writer takes the write lock first: its reads (the rate counts) and writes are one step
                write = connection.get_execution_options().get("write", False)
                connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        for attempt in range(3):  # two workers creating the tables at once: one of them loses, then sees them
            try:
                # the request log's table too: whoever opens the database first makes all of it (a reader of
                # the log never finds the file without its table); an older database gets client_events
                requestlog.metadata.create_all(engine)
                metadata.create_all(engine)
                break
            except sa.exc.DBAPIError:
                if attempt == 2:
                    raise
        return engine

    def _writing(self, *subjects: str) -> Any:
        """A write transaction holding the subjects' locks (Postgres; SQLite's BEGIN IMMEDIATE holds all)."""
        context = self.engine().execution_options(write=True).begin()
        if self.sqlite:
            return context

        class _Locked:
            def __enter__(inner) -> sa.Connection:
                connection = context.__enter__()
                for subject in subjects:  # always client, then listener: no two writers wait on each other
                    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(subject))))
                return connection

            def __exit__(inner, *exc: Any) -> Any:
                return context.__exit__(*exc)

        return _Locked()

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    # ---- ids

    def load_key(self) -> Ids:
        """The signer of listener and generation ids (identity.key_for: configured, else a key file)."""
        if self._ids is None:
            self._ids = Ids(key_for(self.url, self.engine() if self.sqlite else None))
        return self._ids

    # ---- limits

    def _count(self, connection: sa.Connection, subject: str, kind: str, since: datetime) -> int:
        query = sa.select(sa.func.count()).select_from(events_table)
        query = query.where(events_table.c.subject == subject, events_table.c.kind == kind, events_table.c.ts >= since)
        return int(connection.execute(query).scalar_one())

    def _limit(self, connection: sa.Connection, now: datetime, checks: list[tuple[str, str, int, float, str]]) -> None:
        """Prune expired events; RateLimited if any (subject, kind, limit, window_s, who) is at its limit;
        else count this request against each."""
        connection.execute(events_table.delete().where(events_table.c.ts < now - timedelta(seconds=ISSUE_WINDOW_S)))
        for subject, kind, limit, window_s, who in checks:
            if self._count(connection, subject, kind, now - timedelta(seconds=window_s)) >= limit:
                what = "votes" if kind == "vote" else "new listener ids"
                raise RateLimited(f"over {limit} {what} from {who} in {window_s:.0f} s: slow down", window_s)
        rows = [{"subject": subject, "kind": kind, "ts": now} for subject, kind, *_ in checks]
        connection.execute(events_table.insert(), rows)

    # ---- listeners and votes

    def issue(self, client: str, now: datetime | None = None) -> str:
        """A new listener id for `client` (an address); RateLimited past new_listeners_per_hour."""
        now = now or datetime.now(UTC)
        ids = self.load_key()
        with self._writing(f"client:{client}") as connection:
            check = (client, "listener", self.limits.new_listeners_per_hour, ISSUE_WINDOW_S, "this client")
            self._limit(connection, now, [check])
        return ids.new_listener()

    def _votes(self, connection: sa.Connection, key: str) -> Taste:
        columns = [votes_table.c[name] for name in FEATURES]
        query = sa.select(*columns, votes_table.c.vote).where(votes_table.c.listener == key).order_by(votes_table.c.id)
        rows = connection.execute(query).all()
        return Taste.from_votes((np.array(row[:-1], dtype=float), int(row[-1])) for row in rows)

    def standing(self, listener: str) -> Standing:
        """The listener's posterior over all their votes (the prior when they have none, as for an id just
        issued); NotAListener for an id this service did not issue."""
        key = self.load_key().listener(listener)
        with self.engine().connect() as connection:
            return Standing(listener, self._votes(connection, key))

    def vote(
        self, listener: str, generation: str, vote: int, client: str = "local", now: datetime | None = None
    ) -> Standing:
        """Record the listener's vote on a take (replacing their earlier vote on it) and answer the
        posterior after it. NotAListener (400) for an id not issued here, UnknownGeneration (404) for a
        forged id, NotYourTake (403) for a take made for another listener or none, RateLimited (429) over
        a limit, ValueError for a vote that is not ±1."""
        check_vote(vote)
        ids = self.load_key()
        key = ids.listener(listener)
        features, owner = ids.take(generation, MAX_ID_CHARS)
        if not owner:
            raise NotYourTake("this take was made without a listener id: generate with your listener id to vote")
        if owner != key:
            raise NotYourTake("this take was made for another listener")
        now = now or datetime.now(UTC)
        limits = self.limits
        with self._writing(f"client:{client}", f"listener:{key}") as connection:
            self._limit(
                connection,
                now,
                [
                    (client, "vote", limits.client_vote_rate, limits.rate_window_s, "this client"),
                    (key, "vote", limits.vote_rate, limits.rate_window_s, "this listener"),
                ],
            )
            mine = votes_table.c.listener == key
            connection.execute(votes_table.delete().where(mine, votes_table.c.generation == generation))
            row = {"listener": key, "generation": generation, "vote": int(vote), "ts": now}
            connection.execute(votes_table.insert(), [row | dict(zip(FEATURES, map(float, features), strict=True))])
            self._bound(connection, key, now)
            return Standing(listener, self._votes(connection, key))

    def _bound(self, connection: sa.Connection, key: str, now: datetime) -> None:
        """The listener's latest max_votes_per_listener votes kept; everyone's votes past retention gone."""
        oldest_kept = connection.execute(
            sa.select(votes_table.c.id)
            .where(votes_table.c.listener == key)
            .order_by(votes_table.c.id.desc())
            .offset(self.limits.max_votes_per_listener - 1)
            .limit(1)
        ).scalar()
        if oldest_kept is not None:
            connection.execute(
                votes_table.delete().where(votes_table.c.listener == key, votes_table.c.id < oldest_kept)
            )
        cutoff = now - timedelta(days=self.limits.retention_days)
        connection.execute(votes_table.delete().where(votes_table.c.ts < cutoff))

    def forget(self, listener: str) -> int:
        """Delete every row about the listener (votes and rate events); how many votes there were."""
        key = self.load_key().listener(listener)
        with self._writing(f"listener:{key}") as connection:
            connection.execute(events_table.delete().where(events_table.c.subject == key))
            return int(connection.execute(votes_table.delete().where(votes_table.c.listener == key)).rowcount)


def thompson_taste(taste: Taste, seed: int) -> list[float] | None:
    """One posterior draw for a generation (seeded by the request's seed and the vote count, so a request
    is reproducible until the listener votes again); None for a listener without votes (anonymous)."""
    if taste.votes == 0:
        return None
    return [float(v) for v in taste.sample(np.random.default_rng([seed, taste.votes]))]


def read_votes(location: str, since_hours: float | None = None) -> pd.DataFrame | None:
    """The votes (all, or those of the last `since_hours`), oldest first; None when the database has no
    votes table (a service that never got feedback)."""
    query = sa.select(votes_table.c.listener, votes_table.c.vote, votes_table.c.ts).order_by(votes_table.c.id)
    if since_hours is not None:
        query = query.where(votes_table.c.ts >= datetime.now(UTC) - timedelta(hours=since_hours))
    try:
        with requestlog.reading(location) as engine:
            if not sa.inspect(engine).has_table(votes_table.name):
                return None
            with engine.connect() as connection:
                frame = pd.read_sql(query, connection)
    except FileNotFoundError:
        return None
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)  # SQLite gives naive UTC datetimes back
    return frame
