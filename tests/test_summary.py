"""`make demo`'s closing summary: the committed metrics/ in a screenful, and never a crash on a workspace
where stages have not run."""

import json
import shutil
import subprocess
import sys

from conftest import REPO

from bayes_beats.core import paths
from bayes_beats.core.summary import NOT_RUN, SECTIONS, summary


def test_the_committed_metrics_fit_a_screen_with_the_headline_figures():
    text = summary(REPO)
    lines = text.splitlines()
    assert 15 <= len(lines) <= 30 and max(map(len, lines)) <= 110, text
    assert NOT_RUN not in text
    register = json.loads((REPO / paths.REGISTER_METRICS).read_text())
    evaluation = json.loads((REPO / paths.EVAL_METRICS).read_text())
    assert f"version {register['version']} -> {register['alias']}" in text
    row = next(line for line in lines if "CLAP score, validation prompts" in line)
    assert row.split()[-2:] == [f"{evaluation[s]['clap_local']:.3f}" for s in ("base", "finetuned")]
    assert "make mlflow-ui" in text and "make serve" in text and str(paths.MONITOR_REPORT) in text


def test_an_empty_workspace_says_not_run_yet_for_every_stage(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bayes_beats.core.summary", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert done.stdout.count(NOT_RUN) == len(SECTIONS)


def test_a_partial_or_damaged_workspace_still_prints_the_rest(tmp_path):
    (tmp_path / paths.METRICS).mkdir()
    shutil.copy2(REPO / paths.DATA_METRICS, tmp_path / paths.DATA_METRICS)
    (tmp_path / paths.EVAL_METRICS).write_text('{"base": {}}')  # no "finetuned": an interrupted evaluate
    (tmp_path / paths.MONITOR_METRICS).write_text("{not json")
    lines = summary(tmp_path).splitlines()
    by_stage = {line.split()[0]: line for line in lines if line.startswith("  ") and line.split()}
    assert "tracks in" in by_stage["data"]
    assert f"{NOT_RUN} ({tmp_path / paths.EVAL_METRICS} unreadable: KeyError" in by_stage["evaluate"]
    assert "unreadable: JSONDecodeError" in by_stage["monitor"]
    assert by_stage["pretrain"].split(maxsplit=1)[1] == NOT_RUN
