"""Issue L's probes of the listener routes, in-process (FastAPI's TestClient, one client address), against
whichever source tree is first on PYTHONPATH: the figures of the issue's before/after.

    git worktree add /tmp/old c104616
    PYTHONPATH=/tmp/old/src python bench/listener_probe.py /tmp/old    # before
    python bench/listener_probe.py .                                    # after

Takes are signed with the service's own key (no model needed): for the new code bound to their listener."""

import json
import sqlite3
import stat
import sys
import tempfile
from pathlib import Path

from fastapi import FastAPI
from starlette.testclient import TestClient

tmp = Path(tempfile.mkdtemp())
db = tmp / "requests.sqlite"
try:
    from bayes_beats.api.listener_routes import Listeners, listener_routes
    from bayes_beats.api.listeners import ListenerStore
    from bayes_beats.core.config import load_params

    store = ListenerStore(str(db), load_params(sys.argv[1] + "/params.yaml").listeners)
    new = True
except ImportError:
    from bayes_beats.api.listeners import Listeners, ListenerStore, listener_routes

    store = ListenerStore(str(db))
    new = False
listeners = Listeners(store)
app = FastAPI()
listener_routes(app, listeners)
http = TestClient(app, raise_server_exceptions=False)
ids = listeners.start()
out = {}


def listener(name):
    r = http.post("/listener")
    return r.json()["listener"] if r.status_code == 201 else name


def take(who, features=(0.0, 1.0, 0.0)):
    return ids.sign(list(features), ids.listener(who)) if new else ids.sign(list(features))


def vote(who, id_, v=1):
    return http.post("/feedback", json={"listener": who, "id": id_, "vote": v})


# 1. identity
bob = listener("bobby_probe_02")
vote(bob, take(bob))
out["1 GET /listener/alice_probe_01"] = http.get("/listener/alice_probe_01").status_code
out["1 DELETE /listener/bobby_probe_02 (bob's name, from another client)"] = [
    (r.status_code, r.json().get("deleted")) for r in [http.delete("/listener/bobby_probe_02")]
][0]
out["1 bob's votes after"] = http.get(f"/listener/{bob}").json()["votes"]
out["1 POST /feedback with a chosen name"] = vote("alice_probe_01", take(bob)).status_code
# 2. binding and one vote per take
alice, eve = listener("alice_probe_01"), listener("eve_probe_0003")
t = take(alice)
out["2 A's take voted by B"] = vote(eve, t).status_code
codes = [vote(alice, t).status_code for _ in range(120)]
taste = http.get(f"/listener/{alice}").json()
out["2 120 votes on one take: codes"] = {c: codes.count(c) for c in set(codes)}
out["2 votes counted, mode mean/sd"] = (taste["votes"], taste["taste"]["mode"])
# 3. one client, 60 new listener ids, one vote each
codes, issued = [], []
for i in range(60):
    r = http.post("/listener")
    if new and r.status_code != 201:
        issued.append(r.status_code)
        continue
    who = r.json()["listener"] if new else f"sybil_probe_{i:03d}"
    issued.append(201 if new else "(chosen)")
    codes.append(vote(who, take(who, (0.0, 1.0, 0.0))).status_code)
out["3 POST /listener x60 from one client"] = {str(c): issued.count(c) for c in set(issued)}
out["3 votes from one client under those ids"] = {c: codes.count(c) for c in set(codes)}
# 4. unicode id
out["4 id 'é'"] = vote(alice, "é").status_code
out["4 id 'a.é'"] = vote(alice, "a.é").status_code
# 5. where the key lives
con = sqlite3.connect(db)
tables = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
out["5 secrets table rows"] = (
    con.execute("SELECT count(*) FROM secrets").fetchone()[0] if "secrets" in tables else "no table"
)
out["5 db mode"] = oct(stat.S_IMODE(db.stat().st_mode))
key = Path(str(db) + ".key")
out["5 key file mode"] = oct(stat.S_IMODE(key.stat().st_mode)) if key.exists() else "no file"
print(json.dumps(out, indent=1, default=str))
