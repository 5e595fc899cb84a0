"""Google Cloud Storage access shared by the data source and the model checkpoint sync: one client
(anonymous against an emulator named by STORAGE_EMULATOR_HOST), one retry policy, atomic downloads."""

from __future__ import annotations

import os
from pathlib import Path


def split_url(url: str) -> tuple[str, str]:
    """gs://bucket/some/prefix → ("bucket", "some/prefix")."""
    if not url.startswith("gs://"):
        raise ValueError(f"not a gs:// URL: {url!r}")
    bucket, _, prefix = url.removeprefix("gs://").partition("/")
    return bucket, prefix.strip("/")


def client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="emulator", credentials=AnonymousCredentials())
    return storage.Client()


def retry(deadline_s: float):
    """Transient 5xx, 429 and timeouts: exponential backoff until `deadline_s`."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(deadline_s)


def download(blob, local: Path, timeout_s: float, deadline_s: float) -> Path:
    """Download to a temp name, then rename: a cut download never looks complete."""
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.part")
    blob.download_to_filename(tmp, retry=retry(deadline_s), timeout=timeout_s)
    os.replace(tmp, local)
    return local


def sync_dir(url: str, dest: Path, timeout_s: float = 60, deadline_s: float = 120) -> Path:
    """Mirror gs://bucket/prefix into `dest`; files already there with the same size are kept."""
    bucket_name, prefix = split_url(url)
    gcs = client()
    found = 0
    for blob in gcs.list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None, retry=retry(deadline_s)):
        rel = blob.name[len(prefix) :].lstrip("/") if prefix else blob.name
        if not rel or rel.endswith("/"):
            continue
        found += 1
        local = dest / rel
        if not (local.is_file() and local.stat().st_size == blob.size):
            download(blob, local, timeout_s, deadline_s)
    if not found:
        raise FileNotFoundError(f"nothing under {url}")
    return dest
