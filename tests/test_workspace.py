"""The suite leaves the clone as it found it: no test runs in the workspace's mlflow.db, nothing in its
.bentoml or requests.sqlite, no pipeline outputs, no stray files. conftest points every test at its own
MLflow store, BentoML home and request log, snapshots the workspace when it is loaded, and runs this
file last."""

from __future__ import annotations

import subprocess

from conftest import REPO, WORKSPACE_BEFORE, workspace_changes, workspace_state


def test_the_snapshot_sees_what_a_stray_test_would_write(tmp_path):
    clone = tmp_path / "clone"
    (clone / "metrics").mkdir(parents=True)
    (clone / ".gitignore").write_text((REPO / ".gitignore").read_text())
    (clone / "metrics" / "eval.json").write_text("{}\n")
    for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):
        subprocess.run(["git", *cmd], cwd=clone, check=True)
    (clone / "mlflow.db").write_bytes(b"the user's runs")
    before = workspace_state(clone)
    assert workspace_changes(before, workspace_state(clone)) == []

    with (clone / "mlflow.db").open("ab") as db:
        db.write(b" and a test's")  # same mtime resolution or not: the hash differs
    (clone / ".bentoml" / "models").mkdir(parents=True)
    (clone / ".bentoml" / "models" / "model.yaml").write_text("name: x\n")
    (clone / "requests.sqlite").write_bytes(b"")
    (clone / "metrics" / "eval.json").write_text('{"finetuned": {}}\n')
    (clone / "stray.json").write_text("{}\n")
    (clone / "__pycache__").mkdir()
    (clone / "__pycache__" / "x.pyc").write_bytes(b"")  # bytecode is noise, not a finding
    changes = workspace_changes(before, workspace_state(clone))
    assert set(changes) == {
        "changed: mlflow.db",
        "new: !! .bentoml/",
        "written: .bentoml/models/model.yaml",
        "new: !! requests.sqlite",
        "written: requests.sqlite",
        "changed: metrics/eval.json",
        "new: ?? stray.json",
    }, changes


def test_the_suite_left_the_workspace_as_it_found_it():
    changes = workspace_changes(WORKSPACE_BEFORE, workspace_state())
    assert not changes, f"tests wrote into the workspace {REPO}:\n" + "\n".join(changes)
