"""The images for real, with podman on the host network (no registry, no bridge): the service image of a
tiny Bento (built with `make service-image`, the recipe `make images` uses), the training image on a
synthetic corpus (data stages, a fine-tune logged to a real MLflow server, then the 2-process gloo
`accelerate launch` path of the multi-node Job) and the compose stack (PostgreSQL + MLflow + the service).

Images come from the Makefile (`make container-images`; layers cached outside the clone, so only the
first run is cold). podman uses the project's configuration (docker/podman-config.sh): the Makefile
exports CONTAINERS_CONF / CONTAINERS_STORAGE_CONF, and these tests point at the same files."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import BIN, REPO, TINY, copy_repo, free_port, params_with

pytestmark = pytest.mark.container
CATALOG = REPO / "serving" / "catalog"
CONTAINERS_HOME = Path(os.environ.get("CONTAINERS_HOME", Path.home() / ".local/share/bayes-beats/containers"))
os.environ.setdefault("CONTAINERS_CONF", str(CONTAINERS_HOME / "containers.conf"))
os.environ.setdefault("CONTAINERS_STORAGE_CONF", str(CONTAINERS_HOME / "storage.conf"))
TEST_SERVICE_IMAGE = "localhost/bayes-beats-service:test"
TRAIN_IMAGE = "localhost/bayes-beats-train:latest"
PODMAN_COMPOSE = str(CONTAINERS_HOME / "compose-venv/bin/podman-compose")  # make podman installs it


def make(*targets: str, timeout: float = 3600, **variables: str) -> None:
    cmd = ["make", "--no-print-directory", "-s", *targets, *(f"{k}={v}" for k, v in variables.items())]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr[-3000:]}"
    return done


def wait_ready(url: str, container: str, timeout: float = 300) -> float:
    """Seconds until GET /readyz answers 200; fails with the container's log if it exits first."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200:
                return time.monotonic() - start
        except OSError:
            pass
        state = podman("inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
        if state in ("exited", "stopped", ""):
            pytest.fail(f"container {container} {state or 'gone'}: {podman('logs', container, check=False).stderr}")
        time.sleep(0.5)
    pytest.fail(f"{url}/readyz not ready after {timeout} s: {podman('logs', container, check=False).stderr[-3000:]}")


def remove(container: str) -> None:
    podman("rm", "--force", "--time", "5", container, check=False)


@pytest.fixture(scope="session")
def container_images():
    """The local base, the training image and the stack's MLflow / PostgreSQL images (cached layers)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: `make podman` (make test does it)")
    make("container-images")


@pytest.fixture(scope="session")
def service_image(registry, container_images, tmp_path_factory) -> str:
    """`bayes-beats package` of the tiny champion into a temp BENTOML_HOME, then `make service-image`."""
    tmp = tmp_path_factory.mktemp("service-image")
    project = copy_repo(tmp / "project")
    (project / "models").symlink_to(registry[0] / "models")  # models/clap goes into the Bento
    home = tmp / "bentoml"
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry[1], "BENTOML_HOME": str(home)}
    done = subprocess.run([str(BIN / "bayes-beats"), "package"], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    bento = json.loads((project / "metrics" / "package.json").read_text())["bento"]
    make("service-image", BENTO=bento, SERVICE_IMAGE=TEST_SERVICE_IMAGE, BENTOML_HOME=str(home))
    return TEST_SERVICE_IMAGE


def start_container(image: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """The service image on the host network, bound to loopback; the port by environment (what the
    image's HEALTHCHECK reads), as `make serve-image` runs it."""
    port = free_port()
    name = f"bb-test-service-{port}"
    env = {"BENTOML_HOST": "127.0.0.1", "BENTOML_PORT": str(port), **(env or {})}
    flags = [f"--env={k}={v}" for k, v in env.items()]
    podman("run", "-d", "--init", "--network", "host", "--name", name, *flags, image)
    return name, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def service_container(service_image):
    name, url = start_container(service_image)
    try:
        ready_s = wait_ready(url, name)
        yield name, url, ready_s
    finally:
        remove(name)


def test_service_image_is_lean_labelled_non_root_and_probed(service_image):
    image = json.loads(podman("image", "inspect", service_image).stdout)[0]
    config, labels = image["Config"], image["Config"]["Labels"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["ai.bayes-beats.bento"].startswith("bayes-beats:")
    assert labels["ai.bayes-beats.model.version"] == "1"  # the registry version of the champion
    assert config["User"] == "bentoml"
    assert "/readyz" in " ".join(image["Healthcheck"]["Test"])
    probe = "for c in gcc cc make git curl; do command -v $c; done; true"
    found = podman("run", "--rm", "--network", "host", "--entrypoint", "sh", service_image, "-c", probe).stdout
    assert found.split() == [], found  # no compilers, git or curl


def test_service_container_serves_the_api_and_the_page(service_container):
    name, url, ready_s = service_container
    print(f"\nstart to ready: {ready_s:.1f} s")
    assert podman("healthcheck", "run", name, check=False).returncode == 0  # the image's HEALTHCHECK
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    r = httpx.post(f"{url}/generate", json={"prompt": "a calm lake at dawn", "duration_s": 2}, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    audio, sr = sf.read(io.BytesIO(r.content))
    assert abs(len(audio) / sr - 2.0) < 0.1 and np.abs(audio).max() > 0.01
    photo = (CATALOG / "green-hills-blue-sky.jpg").read_bytes()
    vibe = httpx.post(f"{url}/vibe", files={"image": ("x.jpg", photo, "image/jpeg")}, timeout=60)
    assert vibe.status_code == 200 and vibe.json()["caption"] and -1 <= vibe.json()["valence"] <= 1


def test_service_container_refuses_bad_input_with_4xx(service_container):
    _, url, _ = service_container
    assert 400 <= httpx.post(f"{url}/generate", json={"prompt": "", "duration_s": 2}).status_code < 500
    assert 400 <= httpx.post(f"{url}/generate", json={"prompt": "x", "duration_s": 999}).status_code < 500
    bad = httpx.post(f"{url}/vibe", files={"image": ("x.jpg", b"not an image at all", "image/jpeg")})
    assert 400 <= bad.status_code < 500
    assert httpx.get(f"{url}/readyz").status_code == 200  # still serving


def test_sigterm_finishes_in_flight_requests_and_exits_cleanly(service_image):
    name, url = start_container(service_image)
    try:
        wait_ready(url, name)
        body = {"prompt": "slow rain on a tin roof", "duration_s": 10}
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(httpx.post, f"{url}/generate", json=body, timeout=120) for _ in range(4)]
            time.sleep(0.5)  # the requests are in flight
            start = time.monotonic()
            stop = podman("stop", "--time", "60", name, timeout=90)  # SIGTERM, SIGKILL after 60 s
            stopped_s = time.monotonic() - start
            codes = [f.result().status_code for f in futures]
        assert stop.returncode == 0 and codes == [200] * 4, codes
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0 and stopped_s < 60, (state, stopped_s)  # not killed at the grace period
        print(f"\nstop with 4 requests in flight: {stopped_s:.1f} s, exit {state['ExitCode']}")
    finally:
        remove(name)


# ---- the training image


@pytest.fixture(scope="module")
def mlflow_on_loopback(tmp_path_factory):
    from test_tracking import start_server, stop_server

    port = free_port()
    proc = start_server(tmp_path_factory.mktemp("mlflow-train"), port)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


def invoking_user() -> tuple[int, int]:
    """Who owns the outputs: the caller, or a stand-in non-root uid when the tests run as root (here)."""
    return (os.getuid(), os.getgid()) if os.getuid() != 0 else (4321, 4321)


def run_train(work: Path, corpus: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 1200):
    uid, gid = invoking_user()
    flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
    return subprocess.run(
        ["podman", "run", "--rm", "--init", "--network", "host", "--user", f"{uid}:{gid}",
         "--volume", f"{work}:/work", "--volume", f"{corpus}:/corpus:ro",
         "--env=BAYES_BEATS_WORKDIR=/work", "--env=BAYES_BEATS_OVERRIDES=", "--env=HOME=/tmp", *flags,
         TRAIN_IMAGE, *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(container_images, synth_corpus, mlflow_on_loopback, tmp_path_factory):
    """`dvc repro finetune` in the training image on the tiny settings, outputs in a mounted dir."""
    work = tmp_path_factory.mktemp("train-container") / "work"
    work.mkdir()
    params = params_with(**{**TINY, "data": {"source": "jamendo", "path": "/corpus"}})
    (work / "params.yaml").write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
    uid, gid = invoking_user()
    os.chown(work, uid, gid)
    os.chown(work / "params.yaml", uid, gid)
    start = time.monotonic()
    done = run_train(work, synth_corpus, "repro", "finetune", env={"MLFLOW_TRACKING_URI": mlflow_on_loopback})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    print(f"\ntraining container, data stages + pretrain + fine-tune: {time.monotonic() - start:.0f} s")
    return work


def test_training_container_runs_the_pipeline_into_a_mounted_dir(trained, mlflow_on_loopback):
    from mlflow.tracking import MlflowClient

    work = trained
    assert (work / "models" / "finetuned" / "model_card.json").is_file()
    assert (work / "data" / "encoded").is_dir() and (work / "dvc.lock").is_file()
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert {"sample", "features", "labels", "dataset", "codec", "encode", "pretrain", "finetune"} <= set(lock["stages"])
    uid, gid = invoking_user()
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in work.rglob("*")}
    assert owners == {(uid, gid)}, owners  # not root, not the image's 10001
    client = MlflowClient(mlflow_on_loopback)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert any("train_loss" in r.data.metrics or r.data.metrics for r in runs), runs


def test_training_image_runs_two_process_ddp_on_gloo(trained, synth_corpus):
    """The multi-node Job's `launch` path on one machine: accelerate launch, 2 CPU processes (gloo)."""
    work = trained
    shutil.rmtree(work / "checkpoints" / "finetune", ignore_errors=True)
    env = {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "NPROC_PER_NODE": "2", "MASTER_PORT": str(free_port())}
    start = time.monotonic()
    overrides = ["-S", "finetune.steps=4", "-S", "finetune.checkpointing_steps=2"]
    done = run_train(work, synth_corpus, "launch", *overrides, "finetune", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    print(f"\n2-process gloo fine-tune in the training image: {time.monotonic() - start:.0f} s")
    assert "--num_processes 2 --multi_gpu" in done.stderr
    assert (work / "checkpoints/finetune/checkpoint-4/random_states_1.pkl").is_file()  # two ranks
    assert '"processes": 2' in (work / "checkpoints/finetune/fingerprint.json").read_text()
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert lock["stages"]["finetune"]["params"]["params.yaml"]["finetune"]["steps"] == 4  # `dvc commit` by rank 0


# ---- the compose stack: PostgreSQL + MLflow + the service, podman-compose on the host network


def compose(project: str, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [PODMAN_COMPOSE, "-p", project, "-f", "docker/compose.yaml", "-f", "docker/compose.local.yaml", *args]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def wait_http(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} not up after {timeout} s")


def project_containers(project: str) -> list[str]:
    out = podman("ps", "-a", "--filter", f"label=io.podman.compose.project={project}", "--format", "{{.Names}}")
    return out.stdout.split()


def test_compose_stack_serves_the_champion_from_its_mlflow(service_image, registry, tiny_project, tmp_path):
    from mlflow.tracking import MlflowClient

    project = f"bbtest{uuid.uuid4().hex[:8]}"
    ports = {"POSTGRES_PORT": free_port(), "MLFLOW_PORT": free_port(), "SERVICE_PORT": free_port()}
    env = {**{k: str(v) for k, v in ports.items()}, "SERVICE_IMAGE": service_image}
    mlflow_url = f"http://127.0.0.1:{ports['MLFLOW_PORT']}"
    try:
        compose(project, env, "up", "-d", "postgres", "mlflow")
        wait_http(f"{mlflow_url}/health")
        # the tiny model logged, registered and made champion in the stack's MLflow, from the host
        work = tmp_path / "register"
        (work / "metrics").mkdir(parents=True)
        (work / "models").symlink_to(registry[0] / "models")
        (work / "metrics" / "eval.json").write_text(json.dumps({"finetuned": {"clap_local": 0.2}}))
        (work / "params.yaml").write_text(yaml.safe_dump(tiny_project[1].model_dump(), sort_keys=False))
        reg = subprocess.run(
            [str(BIN / "bayes-beats"), "register"],
            cwd=work,
            env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_url},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert reg.returncode == 0, reg.stderr[-3000:]
        client = MlflowClient(mlflow_url)
        assert client.get_model_version_by_alias("bayes-beats", "champion").version == "1"
        runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))

        compose(project, env, "up", "-d", "--no-deps", "service")
        service = f"http://127.0.0.1:{ports['SERVICE_PORT']}"
        wait_http(f"{service}/readyz", timeout=300)
        r = httpx.post(f"{service}/generate", json={"prompt": "foggy harbour at night", "duration_s": 2}, timeout=120)
        assert r.status_code == 200 and r.content[:4] == b"RIFF"

        compose(project, env, "down")
        assert project_containers(project) == []
        compose(project, env, "up", "-d", "postgres", "mlflow")  # the named volumes keep MLflow's data
        wait_http(f"{mlflow_url}/health")
        client = MlflowClient(mlflow_url)
        assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs_before > 0
        assert client.get_model_version_by_alias("bayes-beats", "champion").version == "1"
    finally:
        subprocess.run(
            [PODMAN_COMPOSE, "-p", project, "-f", "docker/compose.yaml", "-f", "docker/compose.local.yaml", "down",
             "-v"],
            cwd=REPO, env={**os.environ, **env}, capture_output=True, timeout=300,
        )  # fmt: skip
        for name in project_containers(project):
            remove(name)
        for volume in podman("volume", "ls", "--format", "{{.Name}}").stdout.split():
            if volume.startswith(f"{project}_"):
                podman("volume", "rm", "--force", volume, check=False)
    assert project_containers(project) == []
