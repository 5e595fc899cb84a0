# bayes-beats-train: the DVC pipeline (`dvc repro`) on the production profile (acestep15), on a GPU.
#
# Base: Debian + Python 3.11 + torch's CUDA wheels from PyPI, not nvidia/cuda. torch==2.14.1 on PyPI
# brings the CUDA runtime, cuDNN, cuBLAS and NCCL as pip dependencies (nvidia-*), so the image needs only
# the host's driver (NVIDIA container toolkit; GKE's driver installer), and an nvidia/cuda base would add
# a second copy of those libraries plus a distro Python beside ours. It is the stack the Bento runs on too
# (BentoML's Debian Python 3.11). Any Debian with python3.11 + venv works:
#   --build-arg BASE_IMAGE=localhost/debian-python:bookworm
# checkov:skip=CKV_DOCKER_7: the base is a build argument whose default is pinned (python:3.11-slim-bookworm); checkov cannot see through ${BASE_IMAGE}
ARG BASE_IMAGE=python:3.11-slim-bookworm

# The pinned dependency list alone, from pyproject.toml: the next stage installs it in its own layer,
# which is reused for as long as this list is unchanged (edits to src/, the readme or other pyproject
# sections do not reinstall the multi-GB CUDA torch stack).
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
    > /tmp/requirements.txt

FROM ${BASE_IMAGE}

# DL3064 matches "TOKEN" in TOKENIZERS_PARALLELISM (a Hugging Face tokenizers switch): no secret here
# hadolint ignore=DL3064
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    BAYES_BEATS_OVERRIDES="model.profile=acestep15 model.checkpoint_dir=/models/ace-step-1.5-turbo"

# a uid above 10000 cannot collide with a host user; numeric USER below so Kubernetes can verify runAsNonRoot
RUN groupadd --gid 10001 bayes \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/bayes --shell /usr/sbin/nologin bayes

WORKDIR /app
# A venv, not the system interpreter: Debian's python3 is externally managed (PEP 668). The project pins
# its whole stack in pyproject.toml (torch==2.14.1, dvc==3.67.1, mlflow==3.17.2, ...): the dependencies
# first (keyed on their list, see above), then the project itself without dependencies; README.md is the
# package's readme.
COPY --from=requirements /tmp/requirements.txt /tmp/requirements.txt
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip install --no-cache-dir --no-deps . \
    && chown 10001:10001 /app

# What `dvc repro` reads: the pipeline, its lock and params, the stage sources (above) and serving/ (deps
# of the package stage); the monitor's reference and sample come from the traffic stage (DVC). No Git in the image, so DVC runs without
# an SCM (core.no_scm in config.local) and the MLflow runs' git_commit tag reads "unknown".
COPY --chown=10001:10001 params.yaml dvc.yaml dvc.lock .dvcignore ./
COPY --chown=10001:10001 .dvc/config .dvc/config
COPY --chown=10001:10001 serving/ serving/
COPY docker/train-entrypoint.py /usr/local/bin/bayes-beats-train
RUN printf '[core]\n    no_scm = true\n' > .dvc/config.local && chown -R 10001:10001 .dvc

ARG VERSION=0.1.0
ARG SOURCE=https://github.com/bayes-beats/bayes-beats
LABEL org.opencontainers.image.title="bayes-beats-train" \
      org.opencontainers.image.description="Bayes' Beats training: the DVC pipeline (dvc repro), accelerate launch" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}"

USER 10001:10001
# A batch job: it exits when the pipeline is done and its exit status is its health; nothing to probe.
HEALTHCHECK NONE
# [-S section.key=value ...] [dvc repro args]: overrides on top of $BAYES_BEATS_OVERRIDES, then
# `dvc repro`; any other command (e.g. `bayes-beats monitor`) runs as is. See docker/train-entrypoint.py.
ENTRYPOINT ["python3", "/usr/local/bin/bayes-beats-train"]
CMD []
