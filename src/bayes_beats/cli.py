"""`bayes-beats <stage>`: one subcommand per DVC stage. Parses, configures logging, dispatches."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

import bayes_beats

# the stages are the package's flat modules (one per dvc.yaml stage; tests/test_layout.py holds the two equal)
STAGES = tuple(sorted(m.name for m in pkgutil.iter_modules(bayes_beats.__path__) if not m.ispkg and m.name != "cli"))


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
    from pydantic import ValidationError

    from bayes_beats.core.config import load_params

    try:
        params = load_params(args.params)
    except (FileNotFoundError, ValidationError) as err:
        print(f"bayes-beats {args.stage}: {args.params}: {err}", file=sys.stderr)
        return 2
    # model.allow_download is the one switch to a model hub: set before anything imports huggingface_hub
    # (it reads the variable once), and over the Makefile's and the images' HF_HUB_OFFLINE=1
    os.environ["HF_HUB_OFFLINE"] = "0" if params.model.allow_download else "1"

    from bayes_beats.core.tracking import TrackingError
    from bayes_beats.data.jamendo import DataError
    from bayes_beats.monitor import MonitorAlert

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
