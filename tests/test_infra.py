"""Containers, cloud infrastructure and CI: each linter finds nothing (or a suppression says why in place),
and the files keep the contract the product relies on (image names, probes, GPU, HPA, the monitor job).

The linters live in .venv-tools (`make tools`: checkov's pins conflict with the product's venv). No test
needs the network: checkov runs with --skip-download and without its PyPI version check."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).parents[1]
TOOLS = REPO / ".venv-tools/bin"
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
MANIFESTS = sorted(p for p in (REPO / "infra/k8s").rglob("*.yaml") if p.name != "kustomization.yaml")
WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.yml"))
OFFLINE = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.skip(f"{path} missing: run `make tools`")
    return str(path)


def run(*cmd: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **OFFLINE}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def checkov(directory: str, *frameworks: str) -> dict[str, tuple[int, int, int]]:
    """checkov over one directory; returns {framework: (passed, failed, skipped)} and asserts no failure."""
    result = run(
        tool("checkov"), "--quiet", "--compact", "--skip-download", "-d", directory, "--framework", *frameworks
    )
    assert result.returncode == 0, result.stdout + result.stderr
    counts = {
        kind: tuple(map(int, numbers))
        for kind, *numbers in re.findall(
            r"(\w+) scan results:\s+Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", result.stdout
        )
    }
    assert set(counts) == set(frameworks), result.stdout
    assert all(failed == 0 and passed > 0 for passed, failed, _ in counts.values()), counts
    return counts  # type: ignore[return-value]


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_hadolint_finds_nothing_in_the_dockerfiles():
    assert DOCKERFILES, "no docker/*.Dockerfile"
    result = run(tool("hadolint"), *map(str, DOCKERFILES))
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_checkov_passes_terraform_and_kubernetes_offline():
    counts = checkov("infra", "terraform", "kubernetes")
    assert counts["terraform"][0] >= 100 and counts["kubernetes"][0] >= 200  # the checks did run


def test_checkov_passes_the_dockerfiles():
    checkov("docker", "dockerfile")


def test_every_manifest_validates_strictly_against_kubernetes():
    assert len(MANIFESTS) >= 4
    result = run(tool("kubernetes-validate"), "--strict", *map(str, MANIFESTS))
    output = result.stdout + result.stderr
    # a resource it cannot read (e.g. no metadata.name) is an ERROR line with exit status 0: count passes
    documents = sum(len(load_all(p)) for p in MANIFESTS)
    assert result.returncode == 0 and "ERROR" not in output, output
    assert output.count("passed for resource") == documents, output


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_production_overlay_renders_and_validates(tmp_path):
    rendered = run("kubectl", "kustomize", "infra/k8s/overlays/production")
    assert rendered.returncode == 0, rendered.stderr
    out = tmp_path / "production.yaml"
    out.write_text(rendered.stdout)
    docs = load_all(out)
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "bayes-beats")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["containers"][0]["image"].endswith("/bayes-beats-service:0.1.0")
    result = run(tool("kubernetes-validate"), "--strict", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 0 and output.count("passed for resource") == len(docs), output


def test_a_reconnecting_listener_reaches_the_pod_that_holds_its_stream():
    """Streams live in one pod's memory: the Service keeps a client on its pod for as long as a stream and its
    resume window last (params.yaml `stream`), so a reconnect (?resume=ID) finds its stream."""
    stream = yaml.safe_load((REPO / "params.yaml").read_text())["stream"]
    service = next(d for d in load_all(REPO / "infra/k8s/base/service.yaml") if d["kind"] == "Service")
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    timeout = service["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]
    assert timeout >= stream["max_stream_s"] + stream["resume_s"]


def test_actionlint_passes_the_workflows():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release.yml"}
    result = run(tool("actionlint"), *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform not installed")
def test_terraform_is_formatted():
    result = run("terraform", "fmt", "-check", "-recursive", "infra/terraform")
    assert result.returncode == 0, f"not formatted: {result.stdout}"


def test_every_suppression_says_why():
    files = [*DOCKERFILES, *(REPO / "infra").rglob("*.tf"), *MANIFESTS]
    found = 0
    # checkov: `# checkov:skip=ID: reason` (Terraform, Dockerfiles), `checkov.io/skipN: ID=reason` (Kubernetes)
    skip = re.compile(r"checkov:skip=(CKV2?_\w+)\s*:?(.*)|checkov\.io/skip\d+: (CKV2?_\w+)=(.*)")
    for path in files:
        for line in path.read_text().splitlines():
            if match := skip.search(line):
                reason = match.group(2) or match.group(4) or ""
                assert len(reason.strip()) > 20, f"{path.name}: {line.strip()}"
                found += 1
    for path in DOCKERFILES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "hadolint ignore" in line:  # the reason is the comment line above it
                assert i > 0 and lines[i - 1].startswith("#") and len(lines[i - 1]) > 20, f"{path.name}: {line}"
                found += 1
    assert found > 0


def test_compose_runs_postgres_mlflow_and_the_service():
    compose = yaml.safe_load((REPO / "docker/compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"postgres", "mlflow", "service"}
    assert services["postgres"]["image"].endswith("postgres:16")
    command = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri postgresql://" in command
    assert "--artifacts-destination /mlartifacts" in command and "--host 0.0.0.0" in command
    assert "--allowed-hosts" in command
    assert "mlartifacts:/mlartifacts" in services["mlflow"]["volumes"]
    assert services["mlflow"]["build"]["dockerfile"] == "mlflow.Dockerfile"
    service = services["service"]
    assert re.search(r"\bbayes-beats-service:", service["image"])
    assert "models:/bayes-beats@champion" in service["environment"]["BAYES_BEATS_MODEL_URI"]
    assert service["environment"]["MLFLOW_TRACKING_URI"].startswith("http://${MLFLOW_ADDR:-mlflow}:")
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert service["environment"]["BAYES_BEATS_SECRET"] == "${BAYES_BEATS_SECRET:-}"  # issue L: ids' key from .env
    assert set(compose["volumes"]) == {"pgdata", "mlartifacts"}


def test_dockerfiles_take_a_base_image_and_run_as_a_user():
    for path in DOCKERFILES:
        text = path.read_text()
        assert re.search(r"^ARG BASE_IMAGE=\S+$", text, re.M) and "FROM ${BASE_IMAGE}" in text, path.name
        assert re.search(r"^USER 10001:10001$", text, re.M), path.name
        assert re.search(r"^LABEL org\.opencontainers\.image\.title=", text, re.M), path.name
        assert "org.opencontainers.image.source=" in text and "org.opencontainers.image.version=" in text, path.name
        assert "HEALTHCHECK" in text and "ca-certificates" not in text, path.name  # no host CA in release images
        if "pip install" in text:  # the Python images (postgres.Dockerfile is Debian's server)
            assert "--no-cache-dir" in text and "python3 -m venv" in text, path.name
    train = (REPO / "docker/train.Dockerfile").read_text()
    assert "model.profile=acestep15" in train and "bayes-beats-train" in train


def test_kubernetes_manifests_keep_the_serving_contract():
    docs = [d for p in MANIFESTS if "base" in p.parts for d in load_all(p)]
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert all(d["metadata"].get("namespace", "bayes-beats") == "bayes-beats" for d in docs)
    pod = by_kind["Deployment", "bayes-beats"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].split(":")[0] == "bayes-beats-service"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 600
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert 30 <= pod["terminationGracePeriodSeconds"] <= 120
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["BAYES_BEATS_MODEL_URI"]["value"] == "models:/bayes-beats@champion"
    assert env["BAYES_BEATS_GPU"]["value"] == "1"
    assert env["BAYES_BEATS_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True
    # issue L: the ids' signing key comes from a secret every replica shares, never from the database
    assert env["BAYES_BEATS_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "bayes-beats-signing-key"
    assert env["BAYES_BEATS_TRUSTED_PROXIES"]["value"] == ""  # X-Forwarded-For is believed from no one by default
    hpa = by_kind["HorizontalPodAutoscaler", "bayes-beats"]
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["scaleTargetRef"]["name"] == "bayes-beats"
    assert ("PodDisruptionBudget", "bayes-beats") in by_kind and ("Service", "bayes-beats") in by_kind
    cron = by_kind["CronJob", "monitor"]["spec"]
    job = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert cron["schedule"] == "0 * * * *"
    assert job["args"][-1] == "monitor" and job["image"].split(":")[0] == "bayes-beats-train"  # `dvc repro monitor`
    assert "monitor.requests=env:BAYES_BEATS_REQUEST_LOG" in job["args"]
    assert "monitor.fail_on_drift=true" in job["args"]  # the scheduled job pages; `dvc repro` in the demo does not
    cron_env = {e["name"]: e for e in job["env"]}
    assert cron_env["BAYES_BEATS_REQUEST_LOG"]["valueFrom"]["secretKeyRef"]["name"] == "request-log"
    assert env["BAYES_BEATS_REQUEST_LOG"]["valueFrom"]["secretKeyRef"]["name"] == "request-log"
    mlflow = by_kind["Deployment", "mlflow"]["spec"]["template"]["spec"]
    assert mlflow["enableServiceLinks"] is False  # else MLFLOW_PORT=tcp://... reaches `mlflow server`
    assert mlflow["initContainers"][0]["restartPolicy"] == "Always"  # the Cloud SQL proxy as a native sidecar


def test_train_entrypoint_applies_overrides_then_repro(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("train_entrypoint", REPO / "docker/train-entrypoint.py")
    assert spec and spec.loader
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    (tmp_path / "params.yaml").write_text("model:\n  profile: tiny\n  checkpoint_dir: ''\nregister:\n  floors: {}\n")
    calls: list[list[str]] = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(entry, "run", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.setenv("BAYES_BEATS_OVERRIDES", "model.profile=acestep15 model.checkpoint_dir=/models/x")
    monkeypatch.delenv("DVC_REMOTE", raising=False)
    assert entry.main(["-S", "register.floors.clap_local=-1.0", "--set-param=sample.tags=[calm]", "finetune"]) == 0
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["model"] == {"profile": "acestep15", "checkpoint_dir": "/models/x"}
    assert params["register"]["floors"] == {"clap_local": -1.0} and params["sample"]["tags"] == ["calm"]
    assert calls == [["dvc", "repro", "finetune"]]
    calls.clear()
    monkeypatch.setenv("DVC_REMOTE", "gcs")
    assert entry.main(["repro"]) == 0
    assert calls == [
        ["dvc", "pull", "--remote", "gcs", "--allow-missing"],
        ["dvc", "repro"],
        ["dvc", "push", "--remote", "gcs"],
    ]
    calls.clear()
    assert entry.main(["bayes-beats", "monitor"]) == 0 and calls == [["bayes-beats", "monitor"]]


def test_multinode_training_job_is_an_indexed_gang_with_a_rendezvous_name():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in load_all(REPO / "infra/k8s/jobs/train-multinode.yaml")}
    job, service = docs["Job", "train-multinode"]["spec"], docs["Service", "train-workers"]["spec"]
    pod = job["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert job["completionMode"] == "Indexed" and job["completions"] == job["parallelism"] == int(env["NNODES"])
    assert service["clusterIP"] == "None" and pod["subdomain"] == "train-workers"
    assert service["selector"].items() <= job["template"]["metadata"]["labels"].items()
    assert env["MASTER_ADDR"] == "train-multinode-0.train-workers" and env["DVC_REMOTE"] == "gcs"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert container["args"][0] == "launch" and container["args"][-1] == "finetune"
    assert container["image"].split("/")[-1].split(":")[0] == "bayes-beats-train"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == int(env["NPROC_PER_NODE"])
    assert ("NetworkPolicy", "train-multinode-peers") in docs


def test_train_entrypoint_launch_builds_the_accelerate_command(tmp_path):
    spec = importlib.util.spec_from_file_location("train_entrypoint_launch", REPO / "docker/train-entrypoint.py")
    assert spec and spec.loader
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    env = {"NNODES": "4", "NPROC_PER_NODE": "1", "JOB_COMPLETION_INDEX": "2", "MASTER_ADDR": "train-multinode-0.x"}
    cmd, rank = entry.launch_command("finetune", env)
    assert rank == 2 and cmd[:2] == ["accelerate", "launch"] and cmd[-1] == "finetune"
    args = " ".join(cmd)
    assert (
        "--num_machines 4 --num_processes 4 --multi_gpu --machine_rank 2 --main_process_ip train-multinode-0.x" in args
    )
    single, rank = entry.launch_command("finetune", {"NPROC_PER_NODE": "1"})
    assert rank == 0 and "--multi_gpu" not in single and "--machine_rank" not in single
    # a mounted work dir gets the image's pipeline files where it has none, and keeps its own params
    app, work = tmp_path / "app", tmp_path / "work"
    (app / "src").mkdir(parents=True)
    (app / "dvc.yaml").write_text("stages: {}\n")
    (app / "params.yaml").write_text("image: true\n")
    (app / "src" / "x.py").write_text("")
    work.mkdir()
    (work / "params.yaml").write_text("mine: true\n")
    cwd = os.getcwd()
    try:
        entry.enter_workdir(str(work), app=app)
        assert Path.cwd() == work
    finally:
        os.chdir(cwd)
    assert (work / "dvc.yaml").is_file() and (work / "src" / "x.py").is_file()
    assert (work / "params.yaml").read_text() == "mine: true\n"
