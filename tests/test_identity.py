"""Who is asking (issue L): listener ids the service issues, generation ids bound to a listener, the
signing key (configured, or a 0600 file beside a SQLite log, never in the database) and the client's
address behind a trusted proxy. No service: bayes_beats.api.identity alone."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from bayes_beats.api.identity import (
    Ids,
    NotAListener,
    UnknownGeneration,
    client_address,
    key_file_for,
    key_for,
    trusted_proxies,
)
from bayes_beats.api.requestlog import database_url


def test_listener_ids_are_issued_secrets_that_verify_without_a_lookup():
    """Finding 1: a listener id is 128 random bits the server signs; a chosen name is refused."""
    ids = Ids(b"k" * 32)
    alice = ids.new_listener()
    body, _, tag = alice.partition(".")
    assert len(base64.urlsafe_b64decode(body + "==")) == 16 and len(alice) == 45
    assert ids.listener(alice) == body and ids.new_listener() != alice
    for chosen in ("alice_probe_01", "bobby_probe_02", f"{body}.{'A' * 22}", f"{body}.{tag}x", "é" * 20, "", None):
        with pytest.raises(NotAListener, match="not a listener id this service issued"):
            ids.listener(chosen)
    with pytest.raises(NotAListener):  # another deployment's key: not ours
        Ids(b"j" * 32).listener(alice)


def test_generation_ids_carry_the_take_and_its_listener_and_are_not_listener_ids():
    ids = Ids(b"k" * 32)
    alice = ids.new_listener()
    a, b = ids.sign([0.5, -1.0, 0.25], ids.listener(alice)), ids.sign([0.5, -1.0, 0.25])
    assert a != b and len(a) < 160 and all(ch.isalnum() or ch in "-_." for ch in a)
    features, owner = ids.take(a)
    assert features.tolist() == [0.5, -1.0, 0.25] and owner == ids.listener(alice)
    assert ids.take(b)[1] == ""  # made with no listener
    body, _, tag = a.partition(".")
    forged = base64.urlsafe_b64encode(json.dumps({"f": [9, 9, 9], "n": "0", "l": ""}).encode()).decode().rstrip("=")
    for bad in ("", "nonsense", body, f"{body}.{tag[:-2]}AA", f"{forged}.{tag}", ids.sign([]), alice):
        with pytest.raises(UnknownGeneration):
            ids.take(bad)
    with pytest.raises(NotAListener):  # the tags are domain-separated: a take's id is no listener's
        ids.listener(a)
    with pytest.raises(UnknownGeneration):
        Ids(b"j" * 32).take(a)


@pytest.mark.parametrize("token", ["é", "é.é", "aé.b", "a.bé", "\x00.\x00", "a.b\n", "💥" * 300, "a" * 300 + ".b"])
def test_a_malformed_id_is_unknown_never_an_encoding_error(token):
    """Finding 4: `{"id": "é"}` raised UnicodeEncodeError (a 500) in the id check."""
    with pytest.raises(UnknownGeneration):
        Ids(b"k" * 32).take(token)
    with pytest.raises(NotAListener):
        Ids(b"k" * 32).listener(token)


def test_the_key_is_configured_or_a_private_file_beside_the_log_never_in_the_database(tmp_path, monkeypatch):
    """Finding 5: the generated key sat in requests.sqlite's `secrets` table, mode 644."""
    monkeypatch.delenv("BAYES_BEATS_SECRET", raising=False)
    monkeypatch.delenv("BAYES_BEATS_SECRET_FILE", raising=False)
    url = database_url(str(tmp_path / "requests.sqlite"))
    with ThreadPoolExecutor(8) as pool:  # workers starting at once agree on one key
        barrier = threading.Barrier(8)
        keys = list(pool.map(lambda _: (barrier.wait(), key_for(url))[1], range(8)))
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    path = key_file_for(url)
    assert path == tmp_path / "requests.sqlite.key" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["requests.sqlite.key"]  # no temporary files left
    assert key_for(url) == keys[0]  # a restart reads it back

    monkeypatch.setenv("BAYES_BEATS_SECRET", "from-the-environment")
    assert key_for(url) == b"from-the-environment"
    assert key_for("postgresql://u@h/db") == b"from-the-environment"
    monkeypatch.delenv("BAYES_BEATS_SECRET")
    mounted = tmp_path / "mounted"
    mounted.write_text("a-key-from-a-mounted-secret\n")
    monkeypatch.setenv("BAYES_BEATS_SECRET_FILE", str(mounted))
    assert key_for("postgresql://u@h/db") == b"a-key-from-a-mounted-secret"
    monkeypatch.delenv("BAYES_BEATS_SECRET_FILE")
    with pytest.raises(RuntimeError, match="every replica shares"):
        key_for("postgresql://u@h/db")


def test_an_older_databases_key_moves_into_the_file_once(tmp_path, monkeypatch):
    """Ids signed before the upgrade keep verifying: the old `secrets` row becomes the key file."""
    monkeypatch.delenv("BAYES_BEATS_SECRET", raising=False)
    monkeypatch.delenv("BAYES_BEATS_SECRET_FILE", raising=False)
    url = database_url(str(tmp_path / "old.sqlite"))
    engine = sa.create_engine(url)
    old = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE secrets (name VARCHAR(64) PRIMARY KEY, value VARCHAR(128))")
        connection.exec_driver_sql(f"INSERT INTO secrets VALUES ('generation_ids', '{old}')")
    assert key_for(url, engine) == base64.urlsafe_b64decode(old + "=")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM secrets").scalar() == 0  # gone from the database
    assert stat.S_IMODE(key_file_for(url).stat().st_mode) == 0o600
    engine.dispose()


def test_the_client_is_the_peer_unless_a_trusted_proxy_says_otherwise():
    """Finding 3's address: X-Forwarded-For is believed only from a configured proxy (none by default)."""
    assert trusted_proxies("") == []
    assert client_address("203.0.113.5", "10.9.9.9", trusted_proxies("")) == "203.0.113.5"  # not trusted
    proxies = trusted_proxies("10.0.0.0/8, 127.0.0.1")
    assert client_address("127.0.0.1", "198.51.100.1", proxies) == "198.51.100.1"
    assert client_address("10.0.0.3", "6.6.6.6, 198.51.100.1, 10.0.0.2", proxies) == "198.51.100.1"  # spoofed head
    assert client_address("10.0.0.3", "nonsense", proxies) == "10.0.0.3"
    assert client_address("10.0.0.3", None, proxies) == "10.0.0.3"
    assert client_address("203.0.113.5", "198.51.100.1", proxies) == "203.0.113.5"
