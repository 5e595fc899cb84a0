"""Entrypoint of the bayes-beats-train image: params overrides, then `dvc repro`.

    bayes-beats-train [repro] [-S section.key=value ...] [dvc repro arguments: --force, a stage, ...]
    bayes-beats-train bayes-beats monitor      # any other command runs as is

Overrides are applied to params.yaml in the container, first those in $BAYES_BEATS_OVERRIDES (space
separated; the image sets the production profile there), then each -S/--set-param, like
`dvc exp run --set-param` (which needs a Git repository; the image has none, so DVC runs with
core.no_scm). Values are YAML: `-S sample.tags=[calm,happy]`, `-S model.cpu_offload=true`.
With $DVC_REMOTE set (e.g. `gcs`), outputs already in that remote are pulled first and the new ones
pushed after a successful run. Signals reach the child, so `docker stop` / pod deletion stop DVC cleanly.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import yaml


def apply_overrides(path: str, overrides: list[str]) -> None:
    with open(path, encoding="utf-8") as handle:
        params = yaml.safe_load(handle)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            sys.exit(f"bayes-beats-train: override {item!r} is not section.key=value")
        *sections, leaf = key.split(".")
        node = params
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = yaml.safe_load(raw) if raw else ""
        print(f"bayes-beats-train: {key} = {node[leaf]!r}", file=sys.stderr)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(params, handle, sort_keys=False)


def run(cmd: list[str]) -> int:
    child = subprocess.Popen(cmd)  # noqa: S603 - our own argv
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    return child.wait()


def main(argv: list[str]) -> int:
    if argv[:2] == ["dvc", "repro"]:
        argv = argv[2:]
    elif argv[:1] == ["repro"]:
        argv = argv[1:]
    elif argv and not argv[0].startswith("-"):
        return run(argv)  # e.g. `bayes-beats monitor`, `dvc metrics show`, `bash`
    overrides = shlex.split(os.environ.get("BAYES_BEATS_OVERRIDES", ""))
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in ("-S", "--set-param"):
            overrides.append(next(args, ""))
        elif arg.startswith("--set-param="):
            overrides.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    apply_overrides("params.yaml", overrides)
    remote = os.environ.get("DVC_REMOTE", "")
    if remote and (status := run(["dvc", "pull", "--remote", remote, "--allow-missing"])) != 0:
        return status
    status = run(["dvc", "repro", *rest])
    if status == 0 and remote:
        status = run(["dvc", "push", "--remote", remote])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
