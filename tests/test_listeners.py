"""Listeners: issued ids, votes, tastes, limits and forgetting — the store on SQLite and Postgres, the HTTP
contract on a real `bentoml serve` (one start, and one restart at the end), and the monitor's like-rate.

Issue L's findings → tests: anyone acting as any listener → test_a_listener_is_an_id_the_service_issued_*
(and tests/test_identity.py); a take voted by another listener or many times →
test_a_take_is_voted_only_by_its_listener_and_once, test_feedback_contract; limits per client, the votes
table bounded → test_limits_hold_per_client_*, test_the_database_size_*; a Unicode id's 500 →
test_a_unicode_id_is_a_400_not_a_500 (and the fuzzer in test_hardening.py); the signing key beside the
votes → test_identity.py, test_votes_and_ids_survive_a_restart."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sqlite3
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from conftest import REPO, champion_env, params_with, reference_frame, start_service, stop_service

from bayes_beats.api.identity import Ids, NotAListener, NotYourTake, UnknownGeneration
from bayes_beats.api.listener_routes import Listeners
from bayes_beats.api.listeners import (
    ListenerStore,
    RateLimited,
    events_table,
    read_votes,
    thompson_taste,
    votes_table,
)
from bayes_beats.api.schemas import LISTENER_PATTERN
from bayes_beats.core.config import load_params
from bayes_beats.model.plans import FEATURES
from bayes_beats.model.taste import Taste

CATALOG = REPO / "serving" / "catalog"
RATE = 40  # the served service's limit per listener per minute (BAYES_BEATS_VOTE_RATE): cheap to exceed
LIMITS = load_params(REPO / "params.yaml").listeners


def limits(**changes) -> object:
    return LIMITS.model_copy(update=changes)


# ---- the store, no service


def test_votes_make_the_posterior_in_order_with_a_rate_limit_and_forgetting(tmp_path):
    store = ListenerStore(str(tmp_path / "log.sqlite"), limits(vote_rate=5))
    ids = store.load_key()
    assert ListenerStore(str(tmp_path / "log.sqlite"), LIMITS).load_key().key == ids.key  # one key for all workers
    alice, bob = store.issue("10.0.0.1"), store.issue("10.0.0.1")
    takes = [[1.0, 0.2, -0.3], [-0.8, 0.1, 0.4], [0.6, -1.0, 0.0]]
    votes = [1, -1, 1]
    for x, vote in zip(takes, votes, strict=True):
        standing = store.vote(alice, ids.sign(x, ids.listener(alice)), vote)
    expected = Taste.from_votes(zip(map(np.array, takes), votes, strict=True))
    assert standing.taste.votes == 3 and np.allclose(standing.taste.mean, expected.mean)
    assert store.standing(alice).to_dict()["taste"] == expected.summary()
    assert store.standing(bob).taste.votes == 0  # others are untouched
    with pytest.raises(ValueError):
        store.vote(alice, ids.sign(takes[0], ids.listener(alice)), 0)
    with pytest.raises(UnknownGeneration):
        store.vote(alice, Ids(b"other").sign(takes[0], ids.listener(alice)), 1)
    store.vote(alice, ids.sign(takes[0], ids.listener(alice)), 1)
    store.vote(alice, ids.sign(takes[0], ids.listener(alice)), 1)
    with pytest.raises(RateLimited):  # 5 in the last minute
        store.vote(alice, ids.sign(takes[0], ids.listener(alice)), 1)
    later = datetime.now(UTC) + timedelta(seconds=61)
    assert store.vote(alice, ids.sign(takes[0], ids.listener(alice)), 1, now=later).taste.votes == 6
    assert store.forget(alice) == 6
    assert store.standing(alice).taste.votes == 0
    assert thompson_taste(store.standing(alice).taste, 3) is None  # no votes: the anonymous generation
    draw = thompson_taste(expected, 3)
    assert draw == thompson_taste(expected, 3) and draw != thompson_taste(expected, 4) and len(draw) == 3


def test_a_take_is_voted_only_by_its_listener_and_once(tmp_path):
    """Finding 2: a take made for A voted by B → 403 (was 200); the same take voted again replaces the
    earlier vote (120 votes on one take were all counted: mode mean 3.85, sd 0.37)."""
    store = ListenerStore(str(tmp_path / "log.sqlite"), limits(vote_rate=1000, client_vote_rate=1000))
    ids = store.load_key()
    alice, bob = store.issue("10.0.0.1"), store.issue("10.0.0.2")
    take = ids.sign([0.0, 1.0, 0.0], ids.listener(alice))
    with pytest.raises(NotYourTake, match="another listener"):
        store.vote(bob, take, 1)
    with pytest.raises(NotYourTake, match="generate with your listener id"):
        store.vote(alice, ids.sign([0.0, 1.0, 0.0]), 1)  # a take made with no listener
    for _ in range(120):
        standing = store.vote(alice, take, 1)
    once = Taste.from_votes([(np.array([0.0, 1.0, 0.0]), 1)])
    assert standing.taste.votes == 1 and np.allclose(standing.taste.mean, once.mean)
    assert standing.taste.summary()["mode"]["mean"] < 1.0  # 120 counted votes had pushed it to 3.85
    assert store.vote(alice, take, -1).taste.votes == 1  # changing one's mind replaces the vote
    assert store.standing(alice).taste.summary() == Taste.from_votes([(np.array([0.0, 1.0, 0.0]), -1)]).summary()
    assert store.standing(bob).taste.votes == 0


def test_limits_hold_per_client_and_the_votes_table_is_bounded(tmp_path):
    """Finding 3: one client under many new listener ids is limited by its address (60 votes under 60 new
    ids were all accepted); new ids per address are capped; a listener keeps its latest N votes and votes
    past retention are deleted."""
    store = ListenerStore(
        str(tmp_path / "log.sqlite"),
        limits(
            vote_rate=100, client_vote_rate=6, new_listeners_per_hour=4, max_votes_per_listener=3, retention_days=30
        ),
    )
    ids = store.load_key()
    mine = [store.issue("198.51.100.7") for _ in range(4)]
    with pytest.raises(RateLimited, match="new listener ids") as over:
        store.issue("198.51.100.7")
    assert over.value.retry_after_s == 3600
    assert store.issue("198.51.100.8")  # another address is not held back
    codes = []
    for listener in mine:
        for i in range(2):
            try:
                store.vote(listener, ids.sign([0.1 * i, 0.0, 0.0], ids.listener(listener)), 1, client="198.51.100.7")
                codes.append(200)
            except RateLimited:
                codes.append(429)
    assert codes == [200] * 6 + [429] * 2  # 6 votes a minute from that address, whatever the listener
    later = datetime.now(UTC) + timedelta(seconds=61)
    listener = mine[0]
    for i in range(5):  # the cap: the latest 3 votes are kept
        standing = store.vote(listener, ids.sign([i, 0.0, 0.0], ids.listener(listener)), 1, "192.0.2.1", later)
    assert standing.taste.votes == 3
    expected = Taste.from_votes((np.array([float(i), 0.0, 0.0]), 1) for i in (2, 3, 4))
    assert np.allclose(standing.taste.mean, expected.mean)
    past = datetime.now(UTC) + timedelta(days=31)  # retention: everything older than 30 days goes
    other = mine[1]
    store.vote(other, ids.sign([0.0, 0.0, 1.0], ids.listener(other)), 1, "192.0.2.2", past)
    assert store.standing(listener).taste.votes == 0 and store.standing(other).taste.votes == 1
    with store.engine().connect() as connection:  # rate events live an hour at most
        oldest = connection.execute(sa.select(sa.func.min(events_table.c.ts))).scalar_one()
    assert oldest.replace(tzinfo=None) >= (past - timedelta(hours=1)).replace(tzinfo=None)


def test_the_database_size_per_vote_and_per_listener(tmp_path):
    """The figures in docs/bayes.md: bytes per vote and per listener on SQLite (events included)."""
    store = ListenerStore(str(tmp_path / "log.sqlite"), limits(vote_rate=10**6, client_vote_rate=10**6))
    ids = store.load_key()
    path = tmp_path / "log.sqlite"
    store.engine()
    empty = path.stat().st_size
    listeners = [store.issue(f"10.1.{i // 250}.{i % 250}") for i in range(50)]
    rng = np.random.default_rng(0)
    for i in range(1000):
        listener = listeners[i % 50]
        store.vote(listener, ids.sign(rng.normal(size=3), ids.listener(listener)), 1, f"10.2.0.{i % 200}")
    store.close()
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        events = (path.stat().st_size - empty) / 1000
        db.execute("DELETE FROM client_events")  # rate events are pruned within the hour: votes alone
        db.execute("VACUUM")
    per_vote = (path.stat().st_size - empty) / 1000
    print(
        f"SQLite: {events:.0f} bytes per vote with its rate events, {per_vote:.0f} without; a listener at the cap of {LIMITS.max_votes_per_listener} votes: "
        f"{per_vote * LIMITS.max_votes_per_listener / 1e3:.0f} kB"
    )
    assert 100 < per_vote < 600  # ~140-character generation id + features + index entries


def concurrent_votes(store: ListenerStore, listener: str, clients: int = 8, each: int = 4) -> None:
    ids = store.load_key()
    barrier = threading.Barrier(clients)

    def client(i: int) -> None:
        barrier.wait()
        for j in range(each):
            take = ids.sign([0.1 * i, 0.0, 0.01 * j], ids.listener(listener))
            store.vote(listener, take, 1 if (i + j) % 2 else -1, client=f"10.3.0.{i}")

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))


def test_concurrent_voters_lose_nothing_on_sqlite(tmp_path):
    store = ListenerStore(str(tmp_path / "log.sqlite"), LIMITS)
    listener = store.issue("10.0.0.1")
    concurrent_votes(store, listener)
    assert store.standing(listener).taste.votes == 32


def test_the_store_on_postgres(postgres, monkeypatch):
    with pytest.raises(RuntimeError, match="BAYES_BEATS_SECRET"):  # replicas must share a configured key
        ListenerStore(postgres, LIMITS).load_key()
    monkeypatch.setenv("BAYES_BEATS_SECRET", "a-shared-secret-of-the-replicas")
    store = ListenerStore(postgres, limits(vote_rate=33))
    other = ListenerStore(postgres, LIMITS)  # another worker
    assert store.load_key().key == other.load_key().key
    listener = store.issue("10.0.0.9")
    concurrent_votes(store, listener)
    assert other.standing(listener).taste.votes == 32
    key = store.load_key().listener(listener)
    store.vote(listener, store.load_key().sign([1.0, 0.0, 0.0], key), 1)
    with pytest.raises(RateLimited):
        store.vote(listener, store.load_key().sign([1.0, 0.0, 0.0], key), 1)
    assert len(read_votes(postgres)) >= 33 and store.forget(listener) == 33
    assert other.standing(listener).taste.votes == 0


def test_without_a_store_feedback_says_so():
    listeners = Listeners(None)
    answer = asyncio.run(listeners.answer(lambda store: store.vote("listener-x", "id", 1).to_dict()))
    assert answer.status_code == 503 and b"BAYES_BEATS_REQUEST_LOG" in answer.body
    assert listeners.start().features(listeners.start().sign([0.0, 1.0, 0.0])).tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(NotAListener):
        listeners.listener_key("alice_probe_01")


# ---- the monitor: like-rate and votes per day from the votes table


def write_votes(location: str, rates: dict[int, float], per_day: int = 40) -> None:
    """`per_day` votes on each of the days ago given, with that share of up votes."""
    store = ListenerStore(location, LIMITS)
    now, rows = datetime.now(UTC), []
    for days_ago, rate in rates.items():
        for i in range(per_day):
            ts = now - timedelta(days=days_ago, hours=1 + i * 20 / per_day)
            vote = 1 if i < rate * per_day else -1
            rows.append(
                dict(listener=f"listener-{i % 5}", generation="x", vote=vote, ts=ts, **dict.fromkeys(FEATURES, 0.0))
            )
    with store.engine().begin() as connection:
        connection.execute(votes_table.insert(), rows)
    store.close()


def test_the_monitor_reports_the_like_rate_and_fails_on_a_sharp_drop(tmp_path, monkeypatch):
    from bayes_beats import monitor
    from bayes_beats.api.requestlog import requests_table

    rng = np.random.default_rng(1)
    (tmp_path / "reports/eval").mkdir(parents=True)
    (tmp_path / "data/traffic").mkdir(parents=True)
    reference_frame(60, rng).drop(columns="latency_s").to_csv(tmp_path / "data/traffic/reference.csv", index=False)
    vocab = "calm piano evening happy upbeat drums dark ambient pad energetic"
    (tmp_path / "reports/eval/vocabulary.txt").write_text("\n".join(vocab.split()))
    location = str(tmp_path / "requests.sqlite")
    current = reference_frame(60, np.random.default_rng(2))
    fixed = dict(endpoint="generate", model_version="v1", duration_s=4.0, num_variations=1, temperature=1.0)
    rows = [
        fixed | row | {"ts": datetime.now(UTC), "prompt_chars": len(row["prompt"]), "prompt_words": 3}
        for row in current.to_dict("records")
    ]
    engine = sa.create_engine(f"sqlite:///{location}")
    requests_table.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(requests_table.insert(), rows)
    engine.dispose()
    monkeypatch.chdir(tmp_path)
    params = params_with(monitor={"requests": location, "min_requests": 20, "fail_on_drift": True})

    write_votes(location, {0: 0.7, 2: 0.75, 3: 0.7})  # steady
    monitor.run(params)
    summary = json.loads((tmp_path / "metrics/monitor.json").read_text())
    votes = summary["votes"]
    assert votes["votes"] == 120 and votes["like_rate"] == pytest.approx(86 / 120, abs=1e-3)
    assert len(votes["votes_per_day"]) >= 3 and sum(votes["votes_per_day"].values()) == 120

    write_votes(location, {0: 0.0}, per_day=80)  # today: 80 more votes, all down → the last day's rate 0.23 vs 0.725
    with pytest.raises(monitor.MonitorAlert, match="like_rate"):
        monitor.run(params)
    assert json.loads((tmp_path / "metrics/monitor.json").read_text())["votes"]["like_rate_last_day"] == 0.2333

    csv = params_with(monitor={"requests": str(tmp_path / "data/traffic/reference.csv"), "min_requests": 20})
    monitor.run(csv)  # a CSV sample has no votes: skipped, with a note
    assert "not monitored" in json.loads((tmp_path / "metrics/monitor.json").read_text())["votes"]["note"]


# ---- the HTTP contract on a real service

serving = pytest.mark.serving


class Served:
    def __init__(self, tmp, env):
        self.tmp, self.env = tmp, env
        self.proc, self.url, self.log = start_service(tmp, env)

    def restart(self) -> None:
        stop_service(self.proc, self.log)
        self.proc, self.url, self.log = start_service(self.tmp, self.env)

    def stop(self) -> None:
        stop_service(self.proc, self.log)


@pytest.fixture(scope="module")
def served(registry, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("listeners")
    env = champion_env(
        registry,
        BAYES_BEATS_REQUEST_LOG=str(tmp / "requests.sqlite"),
        BAYES_BEATS_VOTE_RATE=str(RATE),
        BAYES_BEATS_TRUSTED_PROXIES="127.0.0.1",  # the tests are the proxy: X-Forwarded-For names the client
    )
    service = Served(tmp, env)
    yield service
    service.stop()


def somebody() -> str:
    """A client address of its own (params' per-client limits then never meet another test's traffic)."""
    return "10." + ".".join(str(b) for b in secrets.token_bytes(3))


def new_listener(url: str, client: str | None = None) -> str:
    r = httpx.post(f"{url}/listener", headers={"X-Forwarded-For": client or somebody()}, timeout=30)
    assert r.status_code == 201, r.text
    assert r.json()["votes"] == 0 and re.fullmatch(LISTENER_PATTERN, r.json()["listener"])
    return r.json()["listener"]


def generate(url: str, **body) -> httpx.Response:
    r = httpx.post(f"{url}/generate", json={"prompt": "a calm lake at dawn", "duration_s": 2, **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r


def vote(url: str, listener: str, id_: str, up: object = 1, client: str | None = None) -> httpx.Response:
    body = {"listener": listener, "id": id_, "vote": up}
    return httpx.post(f"{url}/feedback", json=body, headers={"X-Forwarded-For": client or somebody()}, timeout=30)


@serving
def test_takes_carry_unique_ids_their_features_and_the_plan(served):
    url = served.url
    listener = new_listener(url)
    out = generate(url, num_variations=3, temperature=1.5, listener=listener).json()
    takes = out["variations"]
    assert len({t["id"] for t in takes}) == 3 and out["listener"] == listener
    assert all(set(t) >= {"id", "bpm", "keyscale", "energy", "wav_base64", "features"} for t in takes)
    assert all(len(t["features"]) == len(FEATURES) for t in takes) and isinstance(out["plan"], dict)
    one, two = generate(url), generate(url)
    assert one.content == two.content and one.headers["x-generation-id"] != two.headers["x-generation-id"]
    photo = (CATALOG / "green-hills-blue-sky.jpg").read_bytes()
    form = {"duration_s": "2", "num_variations": "2", "bpm": "100", "listener": listener}
    r = httpx.post(
        f"{url}/generate_from_image", files={"image": ("x.jpg", photo, "image/jpeg")}, data=form, timeout=120
    )
    image = r.json()
    assert r.status_code == 200 and image["vibe"]["caption"] and image["listener"] == listener
    assert [t["bpm"] for t in image["variations"]] == [100.0, 100.0] and "plan" in image
    assert len({t["id"] for t in image["variations"]}) == 2 and all(
        len(t["features"]) == 3 for t in image["variations"]
    )
    assert vote(url, listener, image["variations"][0]["id"]).status_code == 200  # an image's take is theirs too
    for bad in ("no spaces allowed", "fresh-listener-1"):
        r = httpx.post(f"{url}/generate", json={"prompt": "x", "listener": bad}, timeout=30)
        assert r.status_code == 400, bad
    body, _, tag = listener.partition(".")
    forged = httpx.post(f"{url}/generate", json={"prompt": "x", "listener": f"{body}.{tag[::-1]}"}, timeout=30)
    assert forged.status_code == 400 and "not a listener id this service issued" in forged.text


@serving
def test_a_listener_is_an_id_the_service_issued_so_nobody_else_can_act_as_them(served):
    """Finding 1: `curl -X DELETE /listener/bobby_probe_02` from another client deleted bob (200); any
    chosen name could be read and voted for. Now names are refused (400) and an issued id is a secret."""
    url = served.url
    bob = new_listener(url)
    assert new_listener(url) != bob
    take = generate(url, listener=bob).headers["x-generation-id"]
    assert vote(url, bob, take).status_code == 200
    body, _, tag = bob.partition(".")
    forged = f"{body}.{'B' if tag[0] == 'A' else 'A'}{tag[1:]}"
    for chosen in ("bobby_probe_02", "alice_probe_01", body, forged):
        assert httpx.delete(f"{url}/listener/{chosen}").status_code == 400, chosen
        assert httpx.get(f"{url}/listener/{chosen}").status_code == 400, chosen
        refused = vote(url, chosen, take)
        assert refused.status_code == 400 and "listener" in refused.text, chosen
    assert httpx.get(f"{url}/listener/{bob}").json()["votes"] == 1  # bob is untouched
    # GET cannot enumerate: an issued id that never voted answers the prior, as does any listener without votes
    fresh = new_listener(url)
    got = httpx.get(f"{url}/listener/{fresh}")
    assert got.status_code == 200 and got.json() == {"listener": fresh, "votes": 0, "taste": Taste.prior().summary()}


@serving
def test_feedback_contract(served):
    """Finding 2: a take made for A voted by B → 403 (was 200); a take voted again replaces the vote."""
    url = served.url
    alice, bob = new_listener(url), new_listener(url)
    take = generate(url, listener=alice).headers["x-generation-id"]
    first = vote(url, alice, take)
    assert first.status_code == 200 and first.json()["votes"] == 1
    assert set(first.json()["taste"]) == set(FEATURES)
    again = vote(url, alice, take, -1)  # changing one's mind: one vote, the latest
    assert again.status_code == 200 and again.json()["votes"] == 1 and again.json()["vote"] == -1
    stolen = vote(url, bob, take)
    assert stolen.status_code == 403 and "another listener" in stolen.json()["error"]
    anonymous = generate(url).headers["x-generation-id"]
    assert vote(url, alice, anonymous).status_code == 403  # made with no listener: nobody's to vote
    body, _, tag = take.partition(".")
    assert vote(url, alice, f"{body}.{'A' * len(tag)}").status_code == 404
    assert vote(url, alice, "no-such-id").status_code == 400
    for bad in (0, 2, True, "1", 1.5):
        assert vote(url, alice, take, bad).status_code == 400, bad
    for listener in ("short", "has space in it", "x" * 65, "semi;colon-listener"):
        assert vote(url, listener, take).status_code == 400, listener
    for missing in ("listener", "id", "vote"):
        body_ = {"listener": alice, "id": take, "vote": 1}
        body_.pop(missing)
        assert httpx.post(f"{url}/feedback", json=body_).status_code == 400, missing
    assert (
        httpx.post(f"{url}/feedback", content=b"{not json", headers={"content-type": "application/json"}).status_code
        == 400
    )
    got = httpx.get(f"{url}/listener/{alice}")
    assert got.status_code == 200 and got.json()["votes"] == 1 and got.json()["listener"] == alice
    assert set(got.json()["taste"]["tempo"]) == {"mean", "sd"}
    assert httpx.get(f"{url}/listener/bad").status_code == 400
    assert httpx.delete(f"{url}/listener/bad%20name").status_code == 400


@serving
def test_a_unicode_id_is_a_400_not_a_500(served):
    """Finding 4: {"listener": ..., "id": "é", "vote": 1} → UnicodeEncodeError, a 500."""
    listener = new_listener(served.url)
    for id_ in ("é", "é.é", "a.é", "\u202e.x", "💥" * 100):
        r = vote(served.url, listener, id_)
        assert r.status_code == 400 and "id" in r.json()["error"], (id_, r.text)


@serving
def test_no_votes_or_forgotten_is_the_anonymous_generation(served):
    url = served.url
    body = {"prompt": "stormy night sea", "num_variations": 2, "temperature": 1.5, "seed": 7}

    def wavs(r):
        return [t["wav_base64"] for t in r.json()["variations"]]

    anonymous = wavs(generate(url, **body))
    never = new_listener(url)
    assert wavs(generate(url, **body, listener=never)) == anonymous
    single = generate(url, seed=7).content
    assert generate(url, seed=7, listener=never).content == single
    forgetful = new_listener(url)
    ids = [t["id"] for t in generate(url, **body, listener=forgetful).json()["variations"]]
    for id_, up in zip(ids, (1, -1), strict=True):
        assert vote(url, forgetful, id_, up).status_code == 200
    assert wavs(generate(url, **body, listener=forgetful)) != anonymous  # their taste tilts the plan
    gone = httpx.delete(f"{url}/listener/{forgetful}")
    assert gone.status_code == 200 and gone.json()["votes"] == 0 and gone.json()["deleted"] == 2
    assert httpx.get(f"{url}/listener/{forgetful}").json()["votes"] == 0
    assert wavs(generate(url, **body, listener=forgetful)) == anonymous
    assert generate(url, seed=7, listener=forgetful).content == single


@serving
def test_over_the_rate_is_429(served):
    """Per listener: RATE votes a minute, whatever addresses they come from (and replaced votes count)."""
    url = served.url
    listener = new_listener(url)
    take = generate(url, listener=listener).headers["x-generation-id"]
    codes = [vote(url, listener, take).status_code for _ in range(RATE + 1)]
    assert codes[:RATE] == [200] * RATE and codes[RATE] == 429
    assert httpx.get(f"{url}/listener/{listener}").json()["votes"] == 1  # one take, one vote


@serving
def test_limits_hold_per_client_address(served):
    """Finding 3: 60 votes from one client under 60 new listener ids were all accepted (no 429)."""
    url, client, limits = served.url, somebody(), LIMITS
    listeners = [new_listener(url, client) for _ in range(limits.new_listeners_per_hour)]
    over = httpx.post(f"{url}/listener", headers={"X-Forwarded-For": client}, timeout=30)
    assert over.status_code == 429 and int(over.headers["retry-after"]) == 3600
    assert new_listener(url)  # another address is not held back
    takes = [
        (listener, take["id"])
        for listener in listeners[:8]
        for take in generate(url, listener=listener, num_variations=4, temperature=1.5).json()["variations"]
    ]
    codes = [vote(url, listener, take, client=client).status_code for listener, take in takes]
    allowed = limits.client_vote_rate
    assert codes[:allowed] == [200] * allowed and set(codes[allowed:]) == {429}
    assert vote(url, *takes[-1], client=somebody()).status_code == 200  # the listener elsewhere is not


@serving
def test_concurrent_clients_lose_no_vote(served):
    url = served.url
    listener = new_listener(url)
    ids = [t["id"] for t in generate(url, listener=listener, num_variations=4, temperature=1.5).json()["variations"]]

    def client(i: int) -> list[int]:
        with httpx.Client(timeout=60, headers={"X-Forwarded-For": somebody()}) as http:
            return [
                http.post(f"{url}/feedback", json={"listener": listener, "id": ids[(i + j) % 4], "vote": 1}).status_code
                for j in range(4)
            ]

    with ThreadPoolExecutor(8) as pool:
        codes = [c for codes in pool.map(client, range(8)) for c in codes]
    assert codes == [200] * 32
    assert httpx.get(f"{url}/listener/{listener}").json()["votes"] == 4  # one per take, none lost
    stored = read_votes(served.env["BAYES_BEATS_REQUEST_LOG"])
    assert stored is not None and len(stored[stored["listener"] == listener.split(".")[0]]) == 4


@serving
def test_voting_up_fast_takes_moves_the_tempo_mean_up(served):
    url = served.url
    listener = new_listener(url)
    for seed, prompt in enumerate(("neon city rush", "quiet forest", "sunny beach party")):
        body = dict(prompt=prompt, seed=seed, num_variations=4, temperature=2.0, listener=listener)
        for take in generate(url, **body).json()["variations"]:
            up = 1 if take["features"][0] > 0 else -1
            assert vote(url, listener, take["id"], up).status_code == 200
    taste = httpx.get(f"{url}/listener/{listener}").json()
    assert taste["votes"] == 12 and taste["taste"]["tempo"]["mean"] > 0.3


@serving
def test_votes_and_ids_survive_a_restart(served):
    """Last: restarts the module's service on the same SQLite file (the key is in the file beside it)."""
    listener = new_listener(served.url)
    takes = [t["id"] for t in generate(served.url, listener=listener, num_variations=2).json()["variations"]]
    assert vote(served.url, listener, takes[0]).status_code == 200
    before = httpx.get(f"{served.url}/listener/{listener}").json()
    served.restart()
    assert httpx.get(f"{served.url}/listener/{listener}").json() == before
    again = vote(served.url, listener, takes[1])  # ids from before the restart verify
    assert again.status_code == 200 and again.json()["votes"] == 2
    key = Path(served.env["BAYES_BEATS_REQUEST_LOG"] + ".key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with closing(sqlite3.connect(served.env["BAYES_BEATS_REQUEST_LOG"])) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "secrets" not in tables and {"votes", "client_events", "requests"} <= tables
