"""MTG-Jamendo layout: the mood/theme TSV and the sources that hold the audio (local dir or GCS).

TSV: header `TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS`, tab-separated, tags in the 6th and later
columns as `mood/theme---calm`, CRLF line endings in the real file, PATH like `46/3346.mp3`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bayes_beats.core.config import DataParams
from bayes_beats.core.skips import SkipLog
from bayes_beats.music.moods import parse_tag

log = logging.getLogger(__name__)
HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")


class DataError(Exception):
    """A data source with nothing usable: the stage stops with this one message."""


@dataclass(frozen=True)
class TrackRow:
    track_id: str
    artist_id: str
    album_id: str
    path: str  # relative to the dataset root, as in the TSV
    duration: float
    tags: tuple[str, ...]


def parse_tsv(raw: bytes, skips: SkipLog) -> tuple[list[TrackRow], int]:
    """Parse the TSV → (usable rows, number of data rows); bad rows are skipped and counted, never fatal."""
    rows: list[TrackRow] = []
    n_lines = 0
    seen: set[str] = set()
    lines = raw.split(b"\n")
    if not lines or not lines[0].strip().startswith(b"TRACK_ID"):
        raise DataError("TSV has no MTG-Jamendo header (TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS)")
    for number, line_bytes in enumerate(lines[1:], start=2):
        line_bytes = line_bytes.rstrip(b"\r")
        if not line_bytes.strip():
            continue
        n_lines += 1
        where = f"TSV line {number}"
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as err:
            skips.skip("non_utf8", where, str(err))
            continue
        cols = line.split("\t")
        if len(cols) < 6 or not all(cols[:4]):
            skips.skip("malformed_row", where, f"{len(cols)} columns")
            continue
        track_id, artist_id, album_id, path, duration_text, *raw_tags = cols
        try:
            duration = float(duration_text)
        except ValueError:
            duration = math.nan
        if not math.isfinite(duration) or duration <= 0:
            skips.skip("bad_duration", f"{where} ({track_id})", repr(duration_text))
            continue
        tags = []
        for raw_tag in raw_tags:
            tag = parse_tag(raw_tag)
            if tag is None:
                if raw_tag.strip():
                    skips.skip("unknown_tag", f"{where} ({track_id})", repr(raw_tag))
            elif tag not in tags:
                tags.append(tag)
        if not tags:
            skips.skip("no_known_tags", f"{where} ({track_id})")
            continue
        if track_id in seen:
            skips.skip("duplicate_track", f"{where} ({track_id})")
            continue
        seen.add(track_id)
        rows.append(TrackRow(track_id, artist_id, album_id, path, duration, tuple(tags)))
    return rows, n_lines


def parse_side_tags(raw: bytes, category: str) -> dict[str, list[str]]:
    """An optional companion TSV (autotagging_genre.tsv, autotagging_instrument.tsv) → track → tags.

    Best effort: these only enrich captions, so unreadable lines are ignored here."""
    prefix = f"{category}---"
    out: dict[str, list[str]] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines()[1:]:
        cols = line.rstrip("\r").split("\t")
        if len(cols) >= 6:
            out[cols[0]] = [c.strip()[len(prefix) :] for c in cols[5:] if c.strip().startswith(prefix)]
    return out


class Source(Protocol):
    description: str

    def read_tsv(self, name: str | None = None) -> bytes | None: ...
    def available(self, paths: list[str]) -> set[str]: ...
    def fetch(self, path: str) -> Path: ...


class LocalSource:
    def __init__(self, root: str | Path, tsv: str) -> None:
        self.root = Path(root)
        self.tsv = tsv
        self.description = str(self.root)

    def read_tsv(self, name: str | None = None) -> bytes | None:
        """The mood TSV (required), or the companion TSV `name` (None when absent)."""
        tsv_path = self.root / (name or self.tsv)
        if not tsv_path.is_file():
            if name:
                return None
            raise DataError(f"no {self.tsv} in {self.root}: is data.path an MTG-Jamendo-layout directory?")
        return tsv_path.read_bytes()

    def available(self, paths: list[str]) -> set[str]:
        return {p for p in paths if (self.root / p).is_file()}

    def fetch(self, path: str) -> Path:
        return self.root / path


class GcsSource:
    """gs://bucket/prefix in the MTG-Jamendo layout; only fetched objects are downloaded, to a cache."""

    def __init__(self, url: str, params: DataParams) -> None:
        from bayes_beats.core import gcs

        bucket_name, self.prefix = gcs.split_url(url)
        self.description = url
        self.tsv = params.tsv
        self.bucket = gcs.client().bucket(bucket_name)
        self.retry = gcs.retry(params.gcs_retry_deadline_s)
        self.timeout = params.gcs_timeout_s
        self.deadline = params.gcs_retry_deadline_s
        self.cache = Path(params.cache_dir) / bucket_name / self.prefix

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def read_tsv(self, name: str | None = None) -> bytes | None:
        from google.api_core.exceptions import NotFound

        try:
            return self.bucket.blob(self._key(name or self.tsv)).download_as_bytes(
                retry=self.retry, timeout=self.timeout
            )
        except NotFound as err:
            if name:
                return None
            raise DataError(f"no {self.tsv} under {self.description}") from err

    def available(self, paths: list[str]) -> set[str]:
        # one listing instead of one request per track
        start = len(self._key(""))
        listed = {
            blob.name[start:]
            for blob in self.bucket.client.list_blobs(
                self.bucket, prefix=self._key(""), retry=self.retry, timeout=self.timeout
            )
        }
        return listed.intersection(paths)

    def fetch(self, path: str) -> Path:
        from bayes_beats.core import gcs

        local = self.cache / path
        if local.is_file():
            return local
        return gcs.download(self.bucket.blob(self._key(path)), local, self.timeout, self.deadline)


def open_source(params: DataParams) -> Source:
    if params.source == "gcs":
        return GcsSource(params.path, params)
    return LocalSource(params.path, params.tsv)
