"""A catalog of captioned images, in the layout of the seed's image-caption data: `<id>.jpg` + `<id>.txt`
pairs in one directory, or a Hugging Face dataset saved with `save_to_disk` (columns `image`, `caption`).

Ids are fixed when the catalog loads; a request's id is only ever a key into that table, never a path."""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass
from pathlib import Path

ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class Entry:
    id: str
    caption: str
    image: bytes
    media_type: str

    def summary(self) -> dict[str, str]:
        return {"id": self.id, "caption": self.caption, "image_url": f"/catalog/{self.id}/image"}


class Catalog:
    def __init__(self, entries: list[Entry]) -> None:
        self.entries = {e.id: e for e in sorted(entries, key=lambda e: e.id)}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, entry_id: str) -> Entry | None:
        return self.entries.get(entry_id)

    def random(self, seed: int | None = None) -> Entry:
        if not self.entries:
            raise LookupError("the catalog is empty")
        return random.Random(seed).choice(list(self.entries.values()))

    def listing(self) -> list[dict[str, str]]:
        return [e.summary() for e in self.entries.values()]


def _media_type(suffix: str) -> str:
    return {".png": "image/png", ".webp": "image/webp"}.get(suffix.lower(), "image/jpeg")


def load_catalog(path: str | Path) -> Catalog:
    """Read every entry into memory once (a catalog is small: downscaled images)."""
    path = Path(path)
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        return _from_hf(path)
    if not path.is_dir():
        raise FileNotFoundError(f"catalog directory not found: {path}")
    entries = []
    for image in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        caption_file = image.with_suffix(".txt")
        if not caption_file.is_file() or not ID.fullmatch(image.stem.lower()):
            continue  # an image without a caption, or a name that cannot be an id
        caption = " ".join(caption_file.read_text(encoding="utf-8").split())
        entries.append(Entry(image.stem.lower(), caption, image.read_bytes(), _media_type(image.suffix)))
    return Catalog(entries)


def _from_hf(path: Path) -> Catalog:
    import datasets

    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        data = datasets.concatenate_datasets(list(data.values()))
    entries = []
    for i, row in enumerate(data):
        buffer = io.BytesIO()
        row["image"].convert("RGB").save(buffer, format="JPEG", quality=85)
        entries.append(Entry(f"img-{i:05d}", str(row["caption"]), buffer.getvalue(), "image/jpeg"))
    return Catalog(entries)
