"""`bayes-beats <stage>`: one subcommand per DVC stage. Parses, configures logging, dispatches."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

STAGES = (
    "corpus",
    "sample",
    "features",
    "labels",
    "dataset",
    "data_quality",
    "codec",
    "encode",
    "pretrain",
    "finetune",
    "clap",
    "evaluate",
    "register",
    "package",
    "monitor",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bayes-beats", description="Bayes' Beats pipeline stages")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in STAGES:
        sub.add_parser(stage, help=f"run the `{stage}` stage (src/bayes_beats/{stage}.py)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network at run time unless a flag says so

    from bayes_beats.config import load_params
    from bayes_beats.jamendo import DataError
    from bayes_beats.monitor import MonitorAlert
    from bayes_beats.tracking import TrackingError

    params = load_params(args.params)
    module = importlib.import_module(f"bayes_beats.{args.stage}")
    try:
        module.run(params)
    except (DataError, TrackingError, FileNotFoundError) as err:
        print(f"bayes-beats {args.stage}: {err}", file=sys.stderr)
        return 2
    except MonitorAlert as err:  # the CronJob's alert: its exit status
        print(f"bayes-beats {args.stage}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
