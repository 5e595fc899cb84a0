"""`make service-image`: a Bento → the bayes-beats-service image with podman (no registry).

    python docker/containerize.py BENTO_TAG IMAGE [--base-image IMAGE] [--version V]

The Bento is taken from $BENTOML_HOME as is (service, model, wheel, catalog), copied into a throw-away
store next to it whose models/ links back to the original, and given docker/bento.j2 as its
dockerfile_template, so Bentos built before the template existed get the same lean Dockerfile. Then
`bentoml containerize --backend podman` builds it on the host network with BASE_IMAGE, the OCI labels
(Bento tag, registry version of the model) as build arguments and the docker image format (which keeps
HEALTHCHECK; OCI images drop it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "bento.j2"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bento")
    parser.add_argument("image")
    parser.add_argument("--base-image", default="python:3.11-slim-bookworm")
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--source", default="https://github.com/bayes-beats/bayes-beats")
    args = parser.parse_args(argv)

    import bentoml

    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    try:
        bento = bentoml.bentos.get(args.bento)
    except bentoml.exceptions.NotFound:
        print(f"containerize: no Bento {args.bento} in {home}: `make package` builds the champion's", file=sys.stderr)
        return 2
    info = yaml.safe_load(Path(bento.path, "bento.yaml").read_text())
    model_tag, model_version = "unknown", "unknown"
    for service in info.get("services", []):
        for model in service.get("models", []):
            if model.get("module") == "bentoml.mlflow":  # the champion imported from the MLflow registry
                model_tag = model["tag"]
                model_version = bentoml.models.get(model_tag).info.labels.get("registry_version", "unknown")
    with tempfile.TemporaryDirectory(prefix="containerize-", dir=home) as staging:
        store = Path(staging)
        copy = store / "bentos" / bento.tag.name / bento.tag.version
        shutil.copytree(bento.path, copy)
        (store / "bentos" / bento.tag.name / "latest").write_text(bento.tag.version)
        (store / "models").symlink_to(home / "models")
        shutil.copy2(TEMPLATE, copy / "env" / "docker" / "Dockerfile.template")
        info["docker"]["dockerfile_template"] = "env/docker/Dockerfile.template"
        (copy / "bento.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
        build_args = {
            "BASE_IMAGE": args.base_image,
            "VERSION": args.version,
            "SOURCE": args.source,
            "BENTO_TAG": str(bento.tag),
            "MODEL_TAG": model_tag,
            "MODEL_VERSION": model_version,
        }
        cmd = [str(Path(sys.executable).parent / "bentoml"), "containerize", str(bento.tag), "--backend", "podman"]
        cmd += ["-t", args.image, "--opt", "network=host", "--opt", "format=docker"]
        for key, value in build_args.items():
            cmd += ["--opt", f"build-arg={key}={value}"]
        start = time.monotonic()
        # cwd /: BentoML resolves the template inside its temporary build context and refuses paths outside
        # the working directory ("Accessing file outside of current working directory is not allowed")
        done = subprocess.run(cmd, cwd="/", env={**os.environ, "BENTOML_HOME": str(store)})  # noqa: S603
        print(f"containerize: {args.image} from {bento.tag} in {time.monotonic() - start:.0f} s", file=sys.stderr)
        return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
