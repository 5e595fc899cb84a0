"""Entrypoint of the bayes-beats-train image: params overrides, then `dvc repro`.

    bayes-beats-train [repro] [-S section.key=value ...] [dvc repro arguments: --force, a stage, ...]
    bayes-beats-train launch [-S ...] [STAGE]  # one stage (default finetune) under `accelerate launch`
    bayes-beats-train bayes-beats monitor      # any other command runs as is

Overrides are applied to params.yaml in the container, first those in $BAYES_BEATS_OVERRIDES (space
separated; the image sets the production profile there), then each -S/--set-param, like
`dvc exp run --set-param` (which needs a Git repository; the image has none, so DVC runs with
core.no_scm). Values are YAML: `-S sample.tags=[calm,happy]`, `-S model.cpu_offload=true`.
With $DVC_REMOTE set (e.g. `gcs`), outputs already in that remote are pulled first and the new ones
pushed after a successful run. Signals reach the child, so `docker stop` / pod deletion stop DVC cleanly.

$BAYES_BEATS_WORKDIR: run there instead of /app; the image's pipeline files (dvc.yaml, dvc.lock,
params.yaml, .dvc/config, and src/ and serving/, the stages' deps) are copied in where missing, so a
mounted directory owned by whoever runs the container (`--user $(id -u):$(id -g)`) gets every output
and a params.yaml of its own.

`launch` is distributed training (infra/k8s/jobs/train-multinode.yaml): every node pulls the stage's
inputs from $DVC_REMOTE, then `accelerate launch` runs `bayes-beats STAGE` with $NPROC_PER_NODE processes
(default: the GPUs it sees, or 1) on each of $NNODES nodes; this node's rank is $NODE_RANK, else the
indexed Job's $JOB_COMPLETION_INDEX; rank 0 at $MASTER_ADDR:$MASTER_PORT hosts the rendezvous. Rank 0
records the result in dvc.lock (`dvc commit`) and pushes it. ACCELERATE_USE_CPU=true makes it DDP on
gloo (one node, CPU processes: what the container test runs).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

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


IMAGE_APP = Path("/app")
PIPELINE_FILES = (
    "dvc.yaml",
    "dvc.lock",
    "params.yaml",
    ".dvcignore",
    ".dvc/config",
    ".dvc/config.local",
    "src",
    "serving",
)


def enter_workdir(workdir: str, app: Path = IMAGE_APP) -> None:
    """chdir to `workdir`, first copying in the image's pipeline files that it does not have yet."""
    target = Path(workdir)
    for rel in PIPELINE_FILES:
        src, dst = app / rel, target / rel
        if not src.exists() or dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    os.chdir(target)


def launch_command(stage: str, env: dict[str, str]) -> tuple[list[str], int]:
    """`accelerate launch` over NNODES × NPROC_PER_NODE processes; returns (argv, this node's rank)."""
    nodes = int(env.get("NNODES", "1"))
    rank = int(env.get("NODE_RANK", env.get("JOB_COMPLETION_INDEX", "0")))
    per_node = env.get("NPROC_PER_NODE", "")
    if not per_node:
        import torch

        per_node = str(max(torch.cuda.device_count(), 1))
    total = nodes * int(per_node)
    cmd = ["accelerate", "launch", "--num_machines", str(nodes), "--num_processes", str(total)]
    if total > 1:
        cmd.append("--multi_gpu")  # DDP; on gloo with ACCELERATE_USE_CPU=true
    if nodes > 1:
        cmd += ["--machine_rank", str(rank), "--main_process_ip", env.get("MASTER_ADDR", "localhost")]
    cmd += ["--main_process_port", env.get("MASTER_PORT", "29500")]
    cmd += ["--mixed_precision", env.get("MIXED_PRECISION", "no"), "--dynamo_backend", "no"]
    script = shutil.which("bayes-beats") or "bayes-beats"  # accelerate runs `python <script>`: the full path
    return [*cmd, script, stage], rank


def launch(stage: str) -> int:
    remote = os.environ.get("DVC_REMOTE", "")
    if remote and (status := run(["dvc", "pull", "--remote", remote, "--allow-missing", "--with-deps", stage])):
        return status
    cmd, rank = launch_command(stage, dict(os.environ))
    print(f"bayes-beats-train: node {rank}: {shlex.join(cmd)}", file=sys.stderr)
    status = run(cmd)
    if status != 0 or rank != 0:
        return status
    status = run(["dvc", "commit", "--force", stage])  # the outputs and their inputs' hashes in dvc.lock
    if status == 0 and remote:
        status = run(["dvc", "push", "--remote", remote, stage])
    return status


def run(cmd: list[str]) -> int:
    child = subprocess.Popen(cmd)  # noqa: S603 - our own argv
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    return child.wait()


def main(argv: list[str]) -> int:
    if workdir := os.environ.get("BAYES_BEATS_WORKDIR"):
        enter_workdir(workdir)
    mode = "repro"
    if argv[:1] == ["launch"]:
        mode, argv = "launch", argv[1:]
    elif argv[:2] == ["dvc", "repro"]:
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
    if mode == "launch":
        if len(rest) > 1:
            sys.exit(f"bayes-beats-train launch: one stage, not {rest}")
        return launch(rest[0] if rest else "finetune")
    remote = os.environ.get("DVC_REMOTE", "")
    if remote and (status := run(["dvc", "pull", "--remote", remote, "--allow-missing"])) != 0:
        return status
    status = run(["dvc", "repro", *rest])
    if status == 0 and remote:
        status = run(["dvc", "push", "--remote", remote])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
