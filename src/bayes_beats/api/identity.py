"""Who is asking: listener ids the service issues, generation ids bound to them, the signing key, and the
client's address.

Listener ids are secrets the server issues (`POST /listener`): base64url(16 random bytes) "." an HMAC tag
of that body with the signing key, so the service verifies one without a lookup and nobody can choose or
guess one (128 random bits). Generation ids sign {features, nonce, listener}: the take can be voted only
by the listener it was made for. The two tags are domain-separated (one key, two HMAC message prefixes), so
neither kind of id can pass for the other.

The key: BAYES_BEATS_SECRET (its bytes) or BAYES_BEATS_SECRET_FILE (a mounted file) in production; with
neither, a SQLite request log gets a generated key in a file beside it (`<log>.key`, created 0600, written
to a temporary file and linked into place, so concurrent workers agree on the first one written), never in
the database. A key an older version kept in the database's `secrets` table is moved into that file once
(the deployment keeps its key; take ids signed before listeners were bound no longer verify, by design:
they name no listener). A server database (Postgres) without a configured secret refuses to
start: replicas must share the key.

The client's address: the ASGI peer, or, only when the peer is a proxy the deployment trusts
(BAYES_BEATS_TRUSTED_PROXIES: comma-separated addresses or CIDRs, none by default), the nearest untrusted
address in X-Forwarded-For."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from bayes_beats.model.plans import FEATURES

log = logging.getLogger(__name__)

SECRET_ENV = "BAYES_BEATS_SECRET"
SECRET_FILE_ENV = "BAYES_BEATS_SECRET_FILE"
TRUSTED_PROXIES_ENV = "BAYES_BEATS_TRUSTED_PROXIES"
LEGACY_SECRET = "generation_ids"  # the row name of the key in an older database's `secrets` table
TAG_BYTES = 16
LISTENER_BYTES = 16  # 128 random bits
LISTENER_DOMAIN, GENERATION_DOMAIN = b"bayes-beats/listener\x00", b"bayes-beats/generation\x00"
VIBE_DOMAIN = b"bayes-beats/vibe\x00"
TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")  # both kinds of id: body "." tag, base64url


class UnknownGeneration(LookupError):
    """An id that is not one of ours (its tag does not verify): the answer is 404."""


class NotYourTake(PermissionError):
    """A take made for another listener, or for none: the answer is 403."""


class NotAListener(ValueError):
    """A listener id this service did not issue: the answer is 400."""


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _split(token: object, max_chars: int) -> tuple[str, str] | None:
    """(body, tag) of a well-formed token (ASCII base64url "body.tag", not too long); None otherwise."""
    if not isinstance(token, str) or len(token) > max_chars or not TOKEN.fullmatch(token):
        return None
    body, _, tag = token.partition(".")
    return body, tag


class Ids:
    """Issues and verifies listener ids and generation ids with one key; pure, no I/O."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def _tag(self, domain: bytes, body: str) -> str:
        return b64(hmac.new(self.key, domain + body.encode("ascii"), hashlib.sha256).digest()[:TAG_BYTES])

    # ---- listeners

    def new_listener(self) -> str:
        body = b64(secrets.token_bytes(LISTENER_BYTES))
        return f"{body}.{self._tag(LISTENER_DOMAIN, body)}"

    def listener(self, token: object) -> str:
        """The listener's key (the id's random body, what the votes table stores: a copy of the database
        alone cannot act as anyone); NotAListener for anything this key did not issue."""
        parts = _split(token, 64)
        if parts is None or not hmac.compare_digest(parts[1], self._tag(LISTENER_DOMAIN, parts[0])):
            raise NotAListener("not a listener id this service issued: POST /listener for one")
        return parts[0]

    # ---- generations

    def sign(self, features: Sequence[float], listener: str | None = None) -> str:
        """A take's id: its features and the key of the listener it was made for ("" for none)."""
        payload = {"f": [round(float(v), 6) for v in features], "n": secrets.token_hex(8), "l": listener or ""}
        body = b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._tag(GENERATION_DOMAIN, body)}"

    def take(self, token: object, max_chars: int = 256) -> tuple[np.ndarray, str]:
        """(the take's features, the listener key it was made for or ""); UnknownGeneration for anything
        this key did not sign as a generation id."""
        parts = _split(token, max_chars)
        if parts is None or not hmac.compare_digest(parts[1], self._tag(GENERATION_DOMAIN, parts[0])):
            raise UnknownGeneration("unknown generation id")
        try:
            payload = json.loads(unb64(parts[0]))
            features, listener = np.asarray(payload["f"], dtype=float), str(payload.get("l", ""))
        except (ValueError, KeyError, TypeError) as err:  # signed by us but not a take's: never expected
            raise UnknownGeneration(f"generation id without features: {err}") from None
        if features.shape != (len(FEATURES),) or not np.all(np.isfinite(features)):
            raise UnknownGeneration("generation id without a take's features")
        return features, listener

    def features(self, token: object) -> np.ndarray:
        return self.take(token)[0]

    # ---- vibes (what /vibe read in an image, for GET /stream?vibe=TOKEN: the image is not sent again)

    def vibe_token(self, vibe: dict) -> str:
        body = b64(json.dumps(vibe, separators=(",", ":")).encode())
        return f"{body}.{self._tag(VIBE_DOMAIN, body)}"

    def vibe(self, token: object) -> dict:
        """The vibe a token carries; ValueError for anything this key did not sign as one."""
        parts = _split(token, 8192)
        if parts is None or not hmac.compare_digest(parts[1], self._tag(VIBE_DOMAIN, parts[0])):
            raise ValueError("not a vibe token this service issued: POST /vibe for one")
        return json.loads(unb64(parts[0]))


# ---- the key


def configured_key(environ: Mapping[str, str] = os.environ) -> bytes | None:
    """BAYES_BEATS_SECRET's bytes, else BAYES_BEATS_SECRET_FILE's content (stripped); None when neither."""
    if environ.get(SECRET_ENV):
        return environ[SECRET_ENV].encode()
    if path := environ.get(SECRET_FILE_ENV):
        key = Path(path).read_bytes().strip()
        if len(key) < 16:
            raise RuntimeError(f"{SECRET_FILE_ENV}={path}: under 16 bytes of key")
        return key
    return None


def key_file_for(sqlite_url: str) -> Path:
    """Where the embedded default keeps its generated key: beside the SQLite request log."""
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    return db.with_name(db.name + ".key")


def key_for(url: str, engine: sa.Engine | None = None) -> bytes:
    """The signing key for a store at `url` (see the module's doc): configured, else the file beside a
    SQLite log (made once, or moved there from an older `secrets` table); a server database without a
    configured key is a RuntimeError."""
    if (key := configured_key()) is not None:
        return key
    if not url.startswith("sqlite:///"):
        raise RuntimeError(
            f"the listener store is a server database ({url.split('://')[0]}): set {SECRET_ENV} or "
            f"{SECRET_FILE_ENV} to the signing key every replica shares (ids signed by one replica must verify on all)"
        )
    path = key_file_for(url)
    if not path.is_file():
        legacy = _legacy_key(engine) if engine is not None else None
        _create_once(path, legacy or b64(os.urandom(32)).encode())
        if legacy is not None and engine is not None:
            _drop_legacy_key(engine)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("signing key %s is readable by others (mode %o): chmod 600 it", path, mode)
    return unb64(path.read_text().strip())


def _create_once(path: Path, content: bytes) -> None:
    """Write `content` to `path` readable by this user only, unless another worker wrote it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another worker's was first: theirs is everyone's
            os.link(tmp, path)  # atomic, and never replaces
    finally:
        tmp.unlink(missing_ok=True)


def _legacy_key(engine: sa.Engine) -> bytes | None:
    """The key an older version stored in the database's `secrets` table (urlsafe base64), if any."""
    if not sa.inspect(engine).has_table("secrets"):
        return None
    with engine.connect() as connection:
        found = connection.execute(
            sa.text("SELECT value FROM secrets WHERE name = :name"), {"name": LEGACY_SECRET}
        ).scalar()
    return str(found).encode() if found else None


def _drop_legacy_key(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM secrets WHERE name = :name"), {"name": LEGACY_SECRET})
    log.info("moved the signing key out of the database into its own file")


# ---- the client's address


def trusted_proxies(spec: str | None = None) -> list[Any]:
    """The networks whose X-Forwarded-For is believed (BAYES_BEATS_TRUSTED_PROXIES; none by default)."""
    spec = os.environ.get(TRUSTED_PROXIES_ENV, "") if spec is None else spec
    return [ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()]


def _is_trusted(address: str, proxies: Sequence[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(peer: str | None, forwarded_for: str | None, proxies: Sequence[Any]) -> str:
    """The address limits are counted by: the peer, unless it is a trusted proxy; then the nearest
    address in X-Forwarded-For (read right to left) that is not one, or the farthest one if all are."""
    address = peer or "unknown"
    if not forwarded_for or not _is_trusted(address, proxies):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # a hop a trusted proxy would not write: stop at the last trusted one
        address = hop
        if not _is_trusted(hop, proxies):
            return hop
    return address
