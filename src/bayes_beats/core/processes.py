"""What a process tree holds (Linux /proc): the service's API and renderer workers under `bentoml serve`,
for the leak checks of the stream's tests and benchmark."""

from __future__ import annotations

import os
from pathlib import Path


def descendants(pid: int) -> set[int]:
    """The process and every process under it."""
    parents: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parents[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grown = {pid}, True
    while grown:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= more
        grown = bool(more)
    return tree


def tree_usage(pid: int) -> dict:
    """Threads, open files and resident memory (MB) of a process and its descendants."""
    threads = files = rss = 0
    for p in descendants(pid):
        try:
            threads += len(os.listdir(f"/proc/{p}/task"))
            files += len(os.listdir(f"/proc/{p}/fd"))
            rss += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # a process that ended while we looked
            continue
    return {"threads": threads, "files": files, "rss_mb": round(rss / 1e6, 1)}
