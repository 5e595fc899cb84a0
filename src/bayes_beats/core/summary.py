"""What `make demo` ends with: the headline figures from metrics/*.json and where to look next, in about
twenty lines (`dvc metrics show` prints every number on one very wide line).

    python -m bayes_beats.core.summary [WORKSPACE]

A stage that has not run yet (its metrics file missing or unreadable) is one "not run yet" line."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bayes_beats.core import paths

NOT_RUN = "not run yet"
SPLITS = {"train", "validation", "test"}


def num(value: Any, digits: int = 3) -> str:
    """A number for people: fixed decimals, "n/a" for NaN or a missing value."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def pct(value: Any) -> str:
    return "n/a" if num(value) == "n/a" else f"{100 * value:.1f} %"


def data(m: dict) -> list[str]:
    splits = m.get("splits", {})
    order = [s for s in ("train", "validation", "test") if s in splits] + sorted(set(splits) - SPLITS)
    split_text = " / ".join(f"{name} {splits[name]}" for name in order)
    skipped = m.get("skipped_total", 0)
    reasons = ", ".join(f"{k} {v}" for k, v in m.get("skipped", {}).items())
    return [
        f"{m['tracks_in']} tracks in, {m['tracks_kept']} kept; {m['clips_kept']} clips ({split_text}); "
        f"{skipped} skipped" + (f" ({reasons})" if reasons else "")
    ]


def codec(m: dict) -> list[str]:
    return [
        f"log-spectral distance {num(m['log_spectral_distance'])} on {m['clips']} clips; "
        f"tempo kept {pct(m.get('bpm_kept'))}, mode kept {pct(m.get('mode_kept'))}"
    ]


def training(m: dict) -> list[str]:
    parts = [k.removeprefix("final_") for k in sorted(m) if k.startswith("final_") and k != "final_loss"]
    detail = ", ".join(f"{p} {num(m[f'final_{p}'])}" for p in parts)
    line = f"loss {num(m.get('first_loss'))} -> {num(m['final_loss'])} in {m['steps']} steps"
    return [line + (f" ({detail})" if detail else "")]


def clap(m: dict) -> list[str]:
    return [
        f"held-out text->audio recall@1 {num(m['val_text_to_audio_recall_at_1'])} on {m['val_clips']} clips "
        f"(cosine matched {num(m.get('val_matched_cosine'))} vs unmatched {num(m.get('val_unmatched_cosine'))})"
    ]


# (label, key) in eval.json's "base" / "finetuned": the figures the README discusses first
EVAL_ROWS = (
    ("CLAP score, validation prompts", "clap_local"),
    ("CLAP score, unseen scene captions", "clap_local_scene"),
    ("mood classifier AUC", "mood_auc"),
    ("Spearman rho, arousal vs tempo", "rho_arousal_tempo"),
    ("Spearman rho, arousal vs energy", "rho_arousal_energy"),
    ("mode accuracy, clear valence", "mode_accuracy_clear_valence"),
    ("fixed metas: tempo within 3 %", "control.tempo_within_3pct"),
    ("fixed metas: key right", "control.key_accuracy"),
    ("free text: tempo range covered", "plan_reading.tempo_range_coverage"),
    ("plan: tempo in its 80 % band", "plan_calibration.tempo.coverage_80"),
)


def dotted(tree: dict, key: str) -> object:
    """tree["a"]["b"] for "a.b"; None where any part is missing."""
    node: object = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def evaluate(m: dict) -> list[str]:
    base, tuned = m.get("base", {}), m["finetuned"]
    lines = [f"{'':34}{'base':>8}{'fine-tuned':>12}"]
    lines += [f"{label:34}{num(dotted(base, key)):>8}{num(dotted(tuned, key)):>12}" for label, key in EVAL_ROWS]
    if takes := m.get("takes"):
        lines.append(
            f"takes vs seeds alone: spread × {num(takes.get('tempo_spread_ratio'), 1)} tempo, "
            f"{num(takes.get('energy_spread_ratio'), 1)} energy, {num(takes.get('mode_spread_ratio'), 1)} mode "
            f"at {num(takes.get('clap_cost_pct'), 1)} % CLAP"
        )
    return lines


def register(m: dict) -> list[str]:
    return [f"version {m['version']} -> {m['alias']}: {m['reason']}"]


def package(m: dict) -> list[str]:
    return [f"Bento {m['bento']} ({num(m.get('bento_mb'), 1)} MB), registry version {m['registry_version']}"]


def monitor(m: dict) -> list[str]:
    verdict = "all pass" if not m["failed"] else f"{m['failed']} FAILED"
    line = (
        f"{m['tests']} tests on {m['requests']} requests: {verdict} "
        f"(p95 latency {num(m.get('latency_p95_s'), 2)} s, mean CLAP score {num(m.get('clap_local_mean'))})"
    )
    return [line, *(f"  failed: {failure}" for failure in m.get("failures", []))]


SECTIONS: tuple[tuple[str, Path, Callable[[dict], list[str]]], ...] = (
    ("data", paths.DATA_METRICS, data),
    ("codec", paths.CODEC_METRICS, codec),
    ("pretrain", paths.PRETRAIN_METRICS, training),
    ("finetune", paths.FINETUNE_METRICS, training),
    ("clap", paths.CLAP_METRICS, clap),
    ("evaluate", paths.EVAL_METRICS, evaluate),
    ("register", paths.REGISTER_METRICS, register),
    ("package", paths.PACKAGE_METRICS, package),
    ("monitor", paths.MONITOR_METRICS, monitor),
)


def section(name: str, path: Path, render: Callable[[dict], list[str]]) -> list[str]:
    try:
        lines = render(json.loads(path.read_text()))  # json reads the NaN the stages may write
    except FileNotFoundError:
        lines = [NOT_RUN]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        lines = [f"{NOT_RUN} ({path} unreadable: {type(err).__name__} {err})"]
    return [f"  {name:10}{lines[0]}", *(f"  {'':10}{line}" for line in lines[1:])]


def where_to_look() -> list[str]:
    return [
        "Where to look",
        "  outputs                   data/ (corpus to dataset), models/ (codec, base, finetuned, clap)",
        "  runs, metrics, registry   make mlflow-ui, then http://127.0.0.1:5000",
        f"  reports                   {paths.DATA_QUALITY_REPORT}, {paths.MONITOR_REPORT}",
        f"  generated audio           {paths.EVAL_REPORTS}/ (WAVs; also in the evaluate run in MLflow)",
        f"  plots                     {paths.EVAL_SPECTROGRAMS}, {paths.EVAL_PER_MOOD}, dvc plots show",
        "  every number              dvc metrics show --md",
        "  the service               make serve, then http://127.0.0.1:3000",
    ]


def summary(root: Path = Path(".")) -> str:
    lines = [f"Bayes' Beats: the pipeline's headline figures ({root / paths.METRICS}/)"]
    for name, path, render in SECTIONS:
        lines += section(name, root / path, render)
    return "\n".join([*lines, "", *where_to_look()])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(summary(Path(args[0]) if args else Path(".")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
