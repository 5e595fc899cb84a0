"""Listeners: generation ids, votes, tastes and forgetting — the store on SQLite and Postgres, the HTTP
contract on a real `bentoml serve` (one start, and one restart at the end), and the monitor's like-rate."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from conftest import REPO, champion_env, params_with, reference_frame, start_service, stop_service

from bayes_beats.api.listeners import (
    GenerationIds,
    Listeners,
    ListenerStore,
    RateLimited,
    UnknownGeneration,
    read_votes,
    thompson_taste,
    votes_table,
)
from bayes_beats.model.plans import FEATURES
from bayes_beats.model.taste import Taste

CATALOG = REPO / "serving" / "catalog"
RATE = 40  # the served service's limit per listener per minute (BAYES_BEATS_VOTE_RATE): cheap to exceed


# ---- the store, no service


def test_ids_are_unique_opaque_and_carry_the_takes_features():
    ids = GenerationIds(b"k" * 32)
    a, b = ids.sign([0.5, -1.0, 0.25]), ids.sign([0.5, -1.0, 0.25])
    assert a != b and len(a) < 120 and all(ch.isalnum() or ch in "-_." for ch in a)
    assert ids.features(a).tolist() == [0.5, -1.0, 0.25]
    body, _, tag = a.partition(".")
    forged_body = base64.urlsafe_b64encode(json.dumps({"f": [9, 9, 9], "n": "0"}).encode()).decode().rstrip("=")
    for bad in ("", "nonsense", body, f"{body}.{tag[:-2]}AA", f"{forged_body}.{tag}", ids.sign([])):
        with pytest.raises(UnknownGeneration):
            ids.features(bad)
    with pytest.raises(UnknownGeneration):  # another key's id is not ours
        GenerationIds(b"j" * 32).features(a)


def test_votes_make_the_posterior_in_order_with_a_rate_limit_and_forgetting(tmp_path):
    store = ListenerStore(str(tmp_path / "log.sqlite"), rate_limit=5)
    ids = store.load_key()
    assert ListenerStore(str(tmp_path / "log.sqlite")).load_key().key == ids.key  # one key for all workers
    takes = [[1.0, 0.2, -0.3], [-0.8, 0.1, 0.4], [0.6, -1.0, 0.0]]
    votes = [1, -1, 1]
    for x, vote in zip(takes, votes, strict=True):
        standing = store.vote("listener-a", ids.sign(x), vote)
    expected = Taste.from_votes(zip(map(np.array, takes), votes, strict=True))
    assert standing.taste.votes == 3 and np.allclose(standing.taste.mean, expected.mean)
    assert store.standing("listener-a").to_dict()["taste"] == expected.summary()
    assert store.standing("listener-b").taste.votes == 0  # others are untouched
    with pytest.raises(ValueError):
        store.vote("listener-a", ids.sign(takes[0]), 0)
    with pytest.raises(UnknownGeneration):
        store.vote("listener-a", GenerationIds(b"other").sign(takes[0]), 1)
    store.vote("listener-a", ids.sign(takes[0]), 1)
    store.vote("listener-a", ids.sign(takes[0]), 1)
    with pytest.raises(RateLimited):  # 5 in the last minute
        store.vote("listener-a", ids.sign(takes[0]), 1)
    later = datetime.now(UTC) + timedelta(seconds=61)
    assert store.vote("listener-a", ids.sign(takes[0]), 1, now=later).taste.votes == 6
    assert store.forget("listener-a") == 6
    assert store.standing("listener-a").taste.votes == 0
    assert thompson_taste(store.standing("listener-a").taste, 3) is None  # no votes: the anonymous generation
    draw = thompson_taste(expected, 3)
    assert draw == thompson_taste(expected, 3) and draw != thompson_taste(expected, 4) and len(draw) == 3


def concurrent_votes(store: ListenerStore, listener: str, clients: int = 8, each: int = 4) -> None:
    ids = store.load_key()
    barrier = threading.Barrier(clients)

    def client(i: int) -> None:
        barrier.wait()
        for j in range(each):
            store.vote(listener, ids.sign([0.1 * i, 0.0, 0.01 * j]), 1 if (i + j) % 2 else -1)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))


def test_concurrent_voters_lose_nothing_on_sqlite(tmp_path):
    store = ListenerStore(str(tmp_path / "log.sqlite"))
    concurrent_votes(store, "listener-c")
    assert store.standing("listener-c").taste.votes == 32


def test_the_store_on_postgres(postgres):
    store = ListenerStore(postgres, rate_limit=33)
    other = ListenerStore(postgres)  # another worker: the same key, created once
    assert store.load_key().key == other.load_key().key
    concurrent_votes(store, "listener-pg")
    assert other.standing("listener-pg").taste.votes == 32
    store.vote("listener-pg", store.load_key().sign([1.0, 0.0, 0.0]), 1)
    with pytest.raises(RateLimited):
        store.vote("listener-pg", store.load_key().sign([1.0, 0.0, 0.0]), 1)
    assert len(read_votes(postgres)) >= 33 and store.forget("listener-pg") == 33
    assert other.standing("listener-pg").taste.votes == 0


def test_without_a_store_feedback_says_so():
    listeners = Listeners(None)
    answer = asyncio.run(listeners.answer(lambda store: store.vote("listener-x", "id", 1).to_dict()))
    assert answer.status_code == 503 and b"BAYES_BEATS_REQUEST_LOG" in answer.body
    assert listeners.start().features(listeners.start().sign([0.0, 1.0, 0.0])).tolist() == [0.0, 1.0, 0.0]


# ---- the monitor: like-rate and votes per day from the votes table


def write_votes(location: str, rates: dict[int, float], per_day: int = 40) -> None:
    """`per_day` votes on each of the days ago given, with that share of up votes."""
    store = ListenerStore(location)
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
    env = champion_env(registry, BAYES_BEATS_REQUEST_LOG=str(tmp / "requests.sqlite"), BAYES_BEATS_VOTE_RATE=str(RATE))
    service = Served(tmp, env)
    yield service
    service.stop()


def generate(url: str, **body) -> httpx.Response:
    r = httpx.post(f"{url}/generate", json={"prompt": "a calm lake at dawn", "duration_s": 2, **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r


def vote(url: str, listener: str, id_: str, up: int = 1) -> httpx.Response:
    return httpx.post(f"{url}/feedback", json={"listener": listener, "id": id_, "vote": up}, timeout=30)


@serving
def test_takes_carry_unique_ids_their_features_and_the_plan(served):
    url = served.url
    out = generate(url, num_variations=3, temperature=1.5, listener="fresh-listener-1").json()
    takes = out["variations"]
    assert len({t["id"] for t in takes}) == 3 and out["listener"] == "fresh-listener-1"
    assert all(set(t) >= {"id", "bpm", "keyscale", "energy", "wav_base64", "features"} for t in takes)
    assert all(len(t["features"]) == len(FEATURES) for t in takes) and isinstance(out["plan"], dict)
    one, two = generate(url), generate(url)
    assert one.content == two.content and one.headers["x-generation-id"] != two.headers["x-generation-id"]
    photo = (CATALOG / "green-hills-blue-sky.jpg").read_bytes()
    form = {"duration_s": "2", "num_variations": "2", "bpm": "100", "listener": "fresh-listener-1"}
    r = httpx.post(
        f"{url}/generate_from_image", files={"image": ("x.jpg", photo, "image/jpeg")}, data=form, timeout=120
    )
    image = r.json()
    assert r.status_code == 200 and image["vibe"]["caption"] and image["listener"] == "fresh-listener-1"
    assert [t["bpm"] for t in image["variations"]] == [100.0, 100.0] and "plan" in image
    assert len({t["id"] for t in image["variations"]}) == 2 and all(
        len(t["features"]) == 3 for t in image["variations"]
    )
    bad = httpx.post(f"{url}/generate", json={"prompt": "x", "listener": "no spaces allowed"}, timeout=30)
    assert bad.status_code in (400, 422)


@serving
def test_feedback_contract(served):
    url = served.url
    take = generate(url).headers["x-generation-id"]
    first = vote(url, "contract-listener", take)
    assert first.status_code == 200 and first.json()["votes"] == 1
    assert set(first.json()["taste"]) == set(FEATURES)
    assert vote(url, "contract-listener", take, -1).json()["votes"] == 2
    body, _, tag = take.partition(".")
    assert vote(url, "contract-listener", f"{body}.{'A' * len(tag)}").status_code == 404
    assert vote(url, "contract-listener", "no-such-id").status_code == 404
    for bad in (0, 2, True, "1", 1.5):
        assert vote(url, "contract-listener", take, bad).status_code in (400, 422), bad
    for listener in ("short", "has space in it", "x" * 65, "semi;colon-listener"):
        assert vote(url, listener, take).status_code in (400, 422), listener
    for missing in ("listener", "id", "vote"):
        body_ = {"listener": "contract-listener", "id": take, "vote": 1}
        body_.pop(missing)
        assert httpx.post(f"{url}/feedback", json=body_).status_code in (400, 422), missing
    assert httpx.post(
        f"{url}/feedback", content=b"{not json", headers={"content-type": "application/json"}
    ).status_code in (400, 422)
    got = httpx.get(f"{url}/listener/contract-listener")
    assert got.status_code == 200 and got.json()["votes"] == 2 and got.json()["listener"] == "contract-listener"
    assert set(got.json()["taste"]["tempo"]) == {"mean", "sd"}
    prior = httpx.get(f"{url}/listener/nobody-at-all").json()
    assert prior["votes"] == 0 and prior["taste"]["tempo"] == {"mean": 0.0, "sd": 1.0}
    assert httpx.get(f"{url}/listener/bad").status_code in (400, 422)
    assert httpx.delete(f"{url}/listener/bad%20name").status_code in (400, 422)


@serving
def test_no_votes_or_forgotten_is_the_anonymous_generation(served):
    url = served.url
    body = {"prompt": "stormy night sea", "num_variations": 2, "temperature": 1.5, "seed": 7}

    def wavs(r):
        return [t["wav_base64"] for t in r.json()["variations"]]

    anonymous = wavs(generate(url, **body))
    assert wavs(generate(url, **body, listener="listener-never-voted")) == anonymous
    single = generate(url, seed=7).content
    assert generate(url, seed=7, listener="listener-never-voted").content == single
    ids = [t["id"] for t in generate(url, **body, listener="listener-forget").json()["variations"]]
    for id_, up in zip(ids * 2, (1, -1, 1, 1), strict=True):
        assert vote(url, "listener-forget", id_, up).status_code == 200
    assert wavs(generate(url, **body, listener="listener-forget")) != anonymous  # their taste tilts the plan
    gone = httpx.delete(f"{url}/listener/listener-forget")
    assert gone.status_code == 200 and gone.json()["votes"] == 0
    assert httpx.get(f"{url}/listener/listener-forget").json()["votes"] == 0
    assert wavs(generate(url, **body, listener="listener-forget")) == anonymous
    assert generate(url, seed=7, listener="listener-forget").content == single


@serving
def test_over_the_rate_is_429(served):
    url = served.url
    take = generate(url).headers["x-generation-id"]
    codes = [vote(url, "listener-rate", take).status_code for _ in range(RATE + 1)]
    assert codes[:RATE] == [200] * RATE and codes[RATE] == 429
    assert httpx.get(f"{url}/listener/listener-rate").json()["votes"] == RATE


@serving
def test_concurrent_clients_lose_no_vote(served):
    url = served.url
    ids = [t["id"] for t in generate(url, num_variations=4, temperature=1.5).json()["variations"]]

    def client(i: int) -> list[int]:
        with httpx.Client(timeout=60) as http:
            return [
                http.post(
                    f"{url}/feedback", json={"listener": "listener-many", "id": ids[(i + j) % 4], "vote": 1}
                ).status_code
                for j in range(4)
            ]

    with ThreadPoolExecutor(8) as pool:
        codes = [c for codes in pool.map(client, range(8)) for c in codes]
    assert codes == [200] * 32
    assert httpx.get(f"{url}/listener/listener-many").json()["votes"] == 32


@serving
def test_voting_up_fast_takes_moves_the_tempo_mean_up(served):
    url = served.url
    for seed, prompt in enumerate(("neon city rush", "quiet forest", "sunny beach party")):
        takes = generate(url, prompt=prompt, seed=seed, num_variations=4, temperature=2.0).json()["variations"]
        for take in takes:
            up = 1 if take["features"][0] > 0 else -1
            assert vote(url, "listener-fast", take["id"], up).status_code == 200
    taste = httpx.get(f"{url}/listener/listener-fast").json()
    assert taste["votes"] == 12 and taste["taste"]["tempo"]["mean"] > 0.3


@serving
def test_votes_and_ids_survive_a_restart(served):
    """Last: restarts the module's service on the same SQLite file."""
    take = generate(served.url).headers["x-generation-id"]
    assert vote(served.url, "listener-stays", take).status_code == 200
    before = httpx.get(f"{served.url}/listener/listener-stays").json()
    served.restart()
    assert httpx.get(f"{served.url}/listener/listener-stays").json() == before
    again = vote(served.url, "listener-stays", take)  # an id from before the restart: the key is in the database
    assert again.status_code == 200 and again.json()["votes"] == 2
    stored = read_votes(served.env["BAYES_BEATS_REQUEST_LOG"])
    assert stored is not None and (stored["listener"] == "listener-stays").sum() == 2
