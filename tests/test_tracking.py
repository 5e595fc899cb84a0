"""MLflow for real: a `mlflow server` process on loopback (sqlite backend) started by the tests."""

import io
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import BIN, REPO, free_port, project_copy
from mlflow.tracking import MlflowClient

from bayes_beats import clap, evaluate, register

pytestmark = pytest.mark.mlflow


def start_server(root, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise TimeoutError("mlflow server did not come up")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = start_server(root, port)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


@pytest.fixture(scope="session")
def evaluated_project(tiny_project, mlflow_server):
    """The tiny project after `clap` and `evaluate`, logging to the server."""
    root, params = tiny_project
    params = params.model_copy(
        update={
            "clap": params.clap.model_copy(update={"steps": 20, "batch_size": 4, "crop_seconds": 2}),
            "evaluate": params.evaluate.model_copy(
                update={"seconds": 2.0, "num_variations": 2, "diversity_prompts": 2, "samples": 2}
            ),
        }
    )
    cwd, before = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    os.chdir(root)
    try:
        clap.run(params)
        evaluate.run(params)
    finally:
        os.chdir(cwd)
        os.environ.pop("MLFLOW_TRACKING_URI") if before is None else os.environ.update(MLFLOW_TRACKING_URI=before)
    return root, params


@pytest.fixture
def tracked(evaluated_project, mlflow_server, monkeypatch):
    root, params = evaluated_project
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(root)
    mlflow.set_tracking_uri(mlflow_server)
    return root, params


def test_evaluate_logs_a_run_with_metrics_and_playable_audio(tracked):
    root, _ = tracked
    results = json.loads((root / "metrics/eval.json").read_text())
    assert {"base", "finetuned", "takes"} <= set(results)
    assert {"tempo", "energy", "mode", "clap_local"} <= set(results["takes"]["plan"]) and results["takes"]["plan"][
        "tempo"
    ] >= 0
    calibration = results["finetuned"]["plan_calibration"]
    assert 0 < calibration["tempo"]["coverage_80"] <= 1 and calibration["mode"]["reliability"]
    assert results["base"]["plan_calibration"] is None  # a base has no planner
    assert -1 <= results["finetuned"]["clap_local"] <= 1
    client = MlflowClient()
    run = client.search_runs([mlflow.get_experiment_by_name("bayes-beats").experiment_id], "tags.stage = 'evaluate'")[0]
    assert "finetuned.clap_local" in run.data.metrics and run.data.tags["git_commit"]
    wavs = [f.path for f in client.list_artifacts(run.info.run_id, "eval") if f.path.endswith(".wav")]
    assert wavs
    local = client.download_artifacts(run.info.run_id, wavs[0], str(root / "downloaded"))
    assert sf.info(local).duration == pytest.approx(2.0, abs=0.05)


def test_register_promotes_then_refuses_a_worse_model_then_takes_a_better_one(tracked):
    root, params = tracked
    eval_path = root / "metrics/eval.json"
    original = json.loads(eval_path.read_text())
    client = MlflowClient()
    # the floor sits just under the toy model's own score: what a toy model scores is not this test's business
    floor = original["finetuned"]["clap_local"] - 0.25
    params = params.model_copy(
        update={"register": params.register.model_copy(update={"floors": {"clap_local": floor}})}
    )
    try:
        register.run(params)
        first = json.loads((root / "metrics/register.json").read_text())
        champion = client.get_model_version_by_alias("bayes-beats", "champion").version
        assert first["alias"] == "champion" and int(champion) == first["version"]

        worse = json.loads(json.dumps(original))
        worse["finetuned"]["clap_local"] -= 0.1  # above the floor, below the champion
        eval_path.write_text(json.dumps(worse))
        register.run(params)
        second = json.loads((root / "metrics/register.json").read_text())
        assert second["alias"] == "challenger" and "does not beat" in second["reason"]
        assert client.get_model_version_by_alias("bayes-beats", "champion").version == champion

        worse["finetuned"]["clap_local"] = floor - 0.01
        eval_path.write_text(json.dumps(worse))
        register.run(params)
        floored = json.loads((root / "metrics/register.json").read_text())
        assert floored["alias"] == "challenger" and "below the floor" in floored["reason"]
        second = floored  # the next version number follows this one

        better = json.loads(json.dumps(original))
        better["finetuned"]["clap_local"] += 0.5
        eval_path.write_text(json.dumps(better))
        register.run(params)
        third = client.get_model_version_by_alias("bayes-beats", "champion").version
        assert third == str(second["version"] + 1)

        # more of the product's goals met beats a better metric, and fewer loses to a worse one
        goals = {"control.tempo_within_3pct": 0.9, "mood_auc": 0.8}
        strict = params.model_copy(update={"register": params.register.model_copy(update={"goals": goals})})
        following = json.loads(json.dumps(original))
        following["finetuned"] |= {"control": {"tempo_within_3pct": 0.95}, "mood_auc": 0.5}
        following["finetuned"]["clap_local"] -= 0.2
        eval_path.write_text(json.dumps(following))
        register.run(strict)
        fourth = json.loads((root / "metrics/register.json").read_text())
        assert fourth["alias"] == "champion" and f"meets 1 of 2 goals against champion v{third}'s 0" in fourth["reason"]
        eval_path.write_text(json.dumps(better))  # a far better metric, but no goal met
        register.run(strict)
        assert "meets 0 of 2 goals" in json.loads((root / "metrics/register.json").read_text())["reason"]
        assert client.get_model_version_by_alias("bayes-beats", "champion").version == str(fourth["version"])
    finally:
        eval_path.write_text(json.dumps(original))


def test_champion_loads_back_and_generates(tracked):
    if not MlflowClient().search_model_versions("name = 'bayes-beats'"):
        register.run(tracked[1])
    model = mlflow.pyfunc.load_model("models:/bayes-beats@champion")
    out = model.predict(
        pd.DataFrame({"prompt": ["misty pine forest"], "duration_s": [2.0], "seed": [3]}), params={"temperature": 0.0}
    )
    audio, sr = sf.read(io.BytesIO(out["wav"][0]))
    assert len(audio) / sr == pytest.approx(2.0, abs=0.05) and np.abs(audio).max() > 0.1
    assert 40 <= out["bpm"][0] <= 220 and out["keyscale"][0].split()[1] in ("major", "minor")


def test_a_stage_fails_at_start_with_one_clear_line_when_the_server_is_down(tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")  # every key is required: a bare file is one clear error
    bare = subprocess.run([str(BIN / "bayes-beats"), "evaluate"], cwd=tmp_path, capture_output=True, text=True)
    assert bare.returncode == 2 and "params.yaml" in bare.stderr and "Traceback" not in bare.stderr
    shutil.copy(REPO / "params.yaml", tmp_path)  # the stage stops at the server before it reads any data
    dead = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [str(BIN / "bayes-beats"), "evaluate"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": dead},
    )
    assert done.returncode == 2
    assert "not reachable" in done.stderr and "Traceback" not in done.stderr
    assert sum("not reachable" in line for line in done.stderr.splitlines()) == 1


def test_training_interrupted_by_a_lost_server_keeps_checkpoints_and_logs_again(tiny_project, tmp_path):
    project = project_copy(tiny_project, tmp_path / "project", steps=60, checkpointing_steps=10)
    (tmp_path / "server").mkdir()
    port = free_port()
    server = start_server(tmp_path / "server", port)
    uri = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    proc = subprocess.Popen(
        [str(BIN / "bayes-beats"), "finetune"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (project / "checkpoints/finetune/checkpoint-10").is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop_server(server)  # the server goes away mid-run
    assert proc.wait(600) != 0  # training went on, but its results could not reach MLflow
    assert (project / "checkpoints/finetune/checkpoint-60").is_dir()  # nothing trained was lost

    server = start_server(tmp_path / "server", port)  # back, same store
    try:
        done = subprocess.run(
            [str(BIN / "bayes-beats"), "finetune"], cwd=project, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("bayes-beats")
        run = client.search_runs([experiment.experiment_id], "tags.stage = 'finetune'", order_by=["start_time DESC"])[0]
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 60  # every step, logged again
    finally:
        stop_server(server)
