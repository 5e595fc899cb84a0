"""Counting what a data stage skipped and why: every skip is one warning line and one count."""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger(__name__)


class SkipLog:
    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.counts: Counter[str] = Counter()

    def skip(self, reason: str, item: str, detail: str = "") -> None:
        self.counts[reason] += 1
        log.warning("%s: skipped %s (%s%s)", self.stage, item, reason, f": {detail}" if detail else "")

    def merge(self, counts: dict[str, int]) -> None:
        self.counts.update(counts)

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    def summary(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items())) or "nothing skipped"
