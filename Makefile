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
# stages run `bayes-beats <stage>` from the venv, also when dvc is called through make
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo test test-fast lint format bench clean mlflow-ui

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet "pip>=24"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

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
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src

format: install
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

test: lint
	$(BIN)/pytest -x

test-fast: install
	$(BIN)/pytest -x -m "not slow"

bench: install
	$(BIN)/python bench/run.py

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $${PORT:-5000}

clean:
	rm -rf data reports metrics/*.json
