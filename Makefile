# vlrface: `make run` trains the demo pipeline, `make test` runs the tests. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/demo.yaml
DATA := data/casia-webface-synthetic

export PATH := $(BIN):$(PATH)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export ZENML_ANALYTICS_OPT_IN := false
export ZENML_ENABLE_RICH_TRACEBACK := false
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: help setup install data run test lint mlflow-ui clean

help:
	@echo "make run        set up, build the demo data, run train_binaryfacenet on it"
	@echo "make test       set up, run the test suite"
	@echo "make lint       ruff"
	@echo "make mlflow-ui  MLflow UI on http://127.0.0.1:5000"
	@echo "make latency-emulated  ARM instruction-counted latency of an ONNX model under qemu-user"
	@echo "make latency-lce       the same for an LCE flatbuffer on LCE's aarch64 kernels (LCE_BUNDLE)"
	@echo "make fuzz       every parser of untrusted bytes, FUZZ_CASES (10000) cases a target"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[dev,detect,team,infra]"
	@touch $(STAMP)

install: $(STAMP)

setup: install
	@test -d .zen || zenml init
	@vlrface stack setup --mlflow-dir mlflow
	@test -d .dvc || dvc init -q
	@dvc remote list | grep -q '^local' || dvc remote add -d local .dvc-remote

# The demo data: restored from the DVC cache or remote when they hold data.dvc's version,
# otherwise rendered again by dvc.yaml's stage (deterministic) and recorded with `dvc add`.
data: setup
	@if dvc pull -q data.dvc >/dev/null 2>&1 && [ -z "$$(dvc status -q data.dvc 2>/dev/null)" ] && [ -d $(DATA) ]; then \
	  echo "demo data: $(DATA) at data.dvc's version"; \
	else \
	  dvc repro --force -q demo_data && dvc add -q data && dvc push -q data.dvc; \
	  echo "demo data: rendered $(DATA), tracked by data.dvc"; \
	fi

# TF_ENABLE_ONEDNN_OPTS=0: with TensorFlow's oneDNN kernels the demo's pre-training reaches a NaN
# loss on an AMD EPYC with AVX-512 (at step 145 at lr 0.05, step 101 at 0.04); without them it
# trains (README "Quick start"). The tests and the real-data profiles keep TensorFlow's default.
run: data
	@echo "+ zenml pipeline run train_binaryfacenet -c $(CONFIG)"
	@TF_ENABLE_ONEDNN_OPTS=0 zenml pipeline run train_binaryfacenet -c $(CONFIG)
	@vlrface models list --name binaryfacenet

test: setup
	pytest -q

lint: install
	ruff check .
	ruff format --check .

mlflow-ui: install
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow/mlflow.db \
	  --default-artifact-root $(CURDIR)/mlflow/artifacts --host 127.0.0.1 --port 5000

clean:
	rm -rf .zen mlflow/mlflow.db mlflow/artifacts .dvc/cache .dvc/tmp

# Emulated ARM latency (vlrface.latency.emulate): installs qemu-user when missing (as root), sets
# up the cached aarch64 toolchain, exports a freshly initialised SqueezeFacePoseNet to ONNX and
# prints its instruction-counted latency on LATENCY_DEVICES as JSON.
LATENCY_DEVICES ?= jetson-nano raspberry-pi-4 pixel-1
.PHONY: latency-emulated
latency-emulated: install
	@command -v qemu-aarch64 >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q \
	  && apt-get install -y -q qemu-user; } \
	  || { echo "qemu-aarch64 not found: apt-get install qemu-user (as root)" >&2; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	python -c 'import sys, torch; from vlrface.export.onnx import to_onnx; \
	from vlrface.models.torch import build_torch; torch.manual_seed(0); \
	m = build_torch("squeezefaceposenet"); \
	open(sys.argv[1], "wb").write(to_onnx(m, m.preprocessing.input_size))' \
	  "$$tmp/squeezefaceposenet.onnx" && \
	vlrface latency --model "$$tmp/squeezefaceposenet.onnx" --backend emulated --json \
	  $(foreach d,$(LATENCY_DEVICES),--device $(d))

# infra/ (docs/scale-out.md): every Kubernetes manifest against the bundled schemas (strict,
# offline), the stacks imported into a throwaway ZenML store, the per-step run settings and the
# pods they make; then train_binaryfacenet compiled to a KFP spec by the kubeflow stack against a
# ZenML server on loopback (its own venv, INFRA_SERVER_VENV: zenml[server] pins fastapi
# differently from the project) and the spec's tasks, images and resources asserted.
INFRA_SERVER_VENV ?= $(CURDIR)/.infra/zenml-server
.PHONY: infra-check infra-server-venv kfp-spec
infra-check kfp-spec: export VLRFACE_ZENML_SERVER_VENV := $(INFRA_SERVER_VENV)
infra-server-venv: install
	python -c 'import sys; from pathlib import Path; from vlrface.kfp_compile import ensure_server_venv; \
	  print(ensure_server_venv(Path(sys.argv[1])))' $(INFRA_SERVER_VENV)

infra-check: infra-server-venv
	kubernetes-validate --strict --quiet $$(find infra/k8s -name '*.yaml' | sort)
	pytest -q tests/test_infra.py tests/test_kubeflow_compile.py

# the KFP spec of train_binaryfacenet on the kubeflow stack, to read: build/kfp/
kfp-spec: infra-server-venv
	@mkdir -p build/kfp
	python -m vlrface.kfp_compile --out build/kfp --venv $(INFRA_SERVER_VENV) > build/kfp-summary.json
	@echo "build/kfp/train_binaryfacenet.yaml (summary: build/kfp-summary.json)"

# Team mode on this machine (docs/scale-out.md): PostgreSQL 15, a local S3 (moto) and an MLflow
# server on loopback; then the team stack is registered and activated. TEAM_DIR holds their
# state, logs and `env` (source it for the addresses and the local S3's keys).
TEAM_DIR ?= .team
.PHONY: team-up team-down test-team
team-up: setup
	python -m vlrface.team up --dir $(TEAM_DIR)
	source $(TEAM_DIR)/env && vlrface stack setup --team --tracking-uri $$MLFLOW_TRACKING_URI \
	  --s3-endpoint $$VLRFACE_S3_ENDPOINT --bucket vlrface-zenml
	@source $(TEAM_DIR)/env && { dvc remote list | grep -q '^team' || dvc remote add team s3://vlrface-dvc/vlrface; } \
	  && dvc remote modify --local team endpointurl $$VLRFACE_S3_ENDPOINT \
	  && echo "DVC remote 'team': dvc push -r team / dvc pull -r team (after: source $(TEAM_DIR)/env)"

team-down:
	-vlrface stack setup --mlflow-dir mlflow >/dev/null
	python -m vlrface.team down --dir $(TEAM_DIR)

test-team: setup
	pytest -q tests/test_team.py

# Emulated ARM latency of an LCE flatbuffer (vlrface.latency.emulate_lce): exports a freshly
# initialised LATENCY_MODEL and counts it on LCE's aarch64 kernels under qemu-user. LCE_BUNDLE
# holds bin/lce_benchmark_model and sysroot/: here and in CI the shared dev bundle (never copied
# into the repository); on your machine a directory with LCE's lce_benchmark_model_aarch64.
LCE_BUNDLE ?= ../shared/tools/lce-aarch64
LATENCY_MODEL ?= binaryfacenet_lce
.PHONY: latency-lce
latency-lce: install
	@{ command -v qemu-aarch64 && command -v gcc; } >/dev/null || { [ "$$(id -u)" = 0 ] \
	  && apt-get update -q && apt-get install -y -q qemu-user gcc; } \
	  || { echo "qemu-aarch64/gcc not found: apt-get install qemu-user gcc (as root)" >&2; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	vlrface export lce --model $(LATENCY_MODEL) --out "$$tmp/m.tflite" --min-cosine -1 --json \
	  >/dev/null && \
	vlrface latency --model "$$tmp/m.tflite" --backend emulated --json \
	  --benchmark-binary $(LCE_BUNDLE)/bin/lce_benchmark_model --sysroot $(LCE_BUNDLE)/sysroot \
	  $(foreach d,$(LATENCY_DEVICES),--device $(d))

# Fuzzing (tests/fuzz.py): RecordIO, pairs.txt, VGGFace2 CSVs, combine CSV, property, .mat, the
# config loader and the pyfunc's request parser, FUZZ_CASES cases each, one child process a
# target; fails on any exception that is not the project's own, or a crash.
FUZZ_CASES ?= 10000
.PHONY: fuzz
fuzz: install
	python -m tests.fuzz --cases $(FUZZ_CASES)
