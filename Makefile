# Set-up and everyday commands. Overrides pass straight to Hydra:
#   make train model=resnet18 trainer.max_epochs=2
#   make train ARGS="-m optimizer.lr=1e-3,3e-4"
PY := .venv/bin/python
PORT ?= 5000
TOPK ?= 5
FORMAT ?= json
export NO_ALBUMENTATIONS_UPDATE := 1

# make hands command-line assignments over in reverse order, with ARGS="a b" split into words;
# drop our own variables (and ARGS's words) and put the rest back in the order typed.
reverse = $(if $(1),$(call reverse,$(wordlist 2,$(words $(1)),$(1))) $(firstword $(1)))
OWN_VARS = ARGS=% PORT=% INPUT=% MODEL=% MODEL_URI=% TOPK=% FORMAT=% STUDIES=% $(ARGS) $(INPUT)
OVERRIDES = $(ARGS) $(call reverse,$(filter-out $(OWN_VARS),$(MAKEOVERRIDES)))

.PHONY: help install test newcomer smoke train predict ui server serve review sweep-dashboard bench bench-accuracy bench-audit bench-review bench-scale bench-serve bench-sweep bench-trust gpu-check docs lint

help:  ## these commands, then every config group and option
	@grep -E '^[a-z-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | sed -E 's/:.*## /\t/' | expand -t 18
	@$(PY) -m pipeline --help

install:  ## create .venv and install the locked dependency set plus this package
	python3 -m venv .venv
	.venv/bin/pip install -c requirements.lock -e '.[dev]'

test:  ## the test suite, on CPU
	$(PY) -m pytest -q

newcomer:  ## the README's first hour on a fresh clone: install, smoke, train, predict, serve name the right model
	$(PY) scripts/newcomer.py $(ARGS)

smoke:  ## the whole pipeline on a tiny config
	$(PY) -m pipeline debug=smoke $(OVERRIDES)

train:  ## the whole pipeline; overrides as above
	$(PY) -m pipeline $(OVERRIDES)

# predict.py exits 1 when it skipped some files (listed on stderr) and predicted the rest: make succeeds then,
# as make itself can only exit 0 or 2, so that non-zero still means failure.
predict:  ## top-k classes for INPUT=<image, folder or glob> [MODEL=<file.onnx>] [TOPK=5] [FORMAT=json|csv]
	$(if $(INPUT),,$(error usage: make predict INPUT=<image, folder or glob> [MODEL=<file.onnx>]))
	$(PY) scripts/predict.py "$(INPUT)" $(if $(MODEL),--model "$(MODEL)") --top-k $(TOPK) --format $(FORMAT) \
		|| [ $$? -eq 1 ]

ui:  ## MLflow UI over the embedded store, on 127.0.0.1:$(PORT), in its model-training view
	@echo "open http://127.0.0.1:$(PORT)/#/experiments?workflowType=machine_learning (the model-training view)"
	.venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --host 127.0.0.1 --port $(PORT)

server:  ## MLflow tracking server on 127.0.0.1:$(PORT) (store mlruns/server/); Ctrl-C stops it
	$(PY) scripts/mlflow_server.py --port $(PORT) --dir mlruns/server

# its own default port (5001), so that it can run beside `make ui` or `make server` on 5000
serve:  ## serve the newest logged image classifier (or MODEL_URI=models:/...) over HTTP on 127.0.0.1:5001
	$(PY) scripts/serve.py $(if $(MODEL_URI),--model-uri "$(MODEL_URI)") \
		--port $(if $(filter command line,$(origin PORT)),$(PORT),5001)

review:  ## the data audit's suspects of a run (RUN=<id>, default the newest) to decide in a web page on 127.0.0.1:5002
	$(PY) scripts/review.py $(if $(RUN),--run "$(RUN)") $(if $(filter command line,$(origin PORT)),--port $(PORT))

# its own default port (8080), so that it can run beside `make ui` on 5000
DASHBOARD_PORT = $(if $(filter command line,$(origin PORT)),$(PORT),8080)
sweep-dashboard:  ## the sweeps' Optuna studies (mlruns/optuna.db, or STUDIES=<storage URL>) on 127.0.0.1:8080
	@echo "open http://127.0.0.1:$(DASHBOARD_PORT)/ (the studies in $(if $(STUDIES),$(STUDIES),mlruns/optuna.db)); Ctrl-C stops it"
	.venv/bin/optuna-dashboard $(if $(STUDIES),"$(STUDIES)",sqlite:///$(CURDIR)/mlruns/optuna.db) --host 127.0.0.1 \
		--port $(DASHBOARD_PORT)

bench:  ## pipeline vs bare baselines: train step, real photos, loading, latency, smoke, --help -> bench/report.md
	$(PY) scripts/bench.py $(ARGS)

bench-accuracy:  ## test accuracy and time per training recipe on real photos (../shared; ARGS="--matrix DIR": the folder matrix) -> bench/accuracy.md
	$(PY) scripts/bench_accuracy.py $(ARGS)

bench-trust:  ## calibration, prediction sets, unknown answers on the folder matrix (ARGS="--matrix DIR") -> bench/trust.md
	$(PY) scripts/bench_trust.py $(ARGS)

bench-review:  ## test accuracy with clean, noisy and reviewed labels: the audit's suggestions all accepted (../shared)
	$(PY) scripts/bench_review.py $(ARGS)

bench-audit:  ## does the data audit find planted label errors and off-domain images in real photos (../shared)
	$(PY) scripts/bench_audit.py $(ARGS)

bench-scale:  ## data-stage time and memory at 10k and 50k synthetic images (ARGS="--sizes 10000,50000,200000")
	$(PY) scripts/bench_scale.py $(ARGS)

bench-serve:  ## the served model under 4 concurrent clients, next to scripts/predict.py -> bench/serve.md
	$(PY) scripts/bench_serve.py $(ARGS)

bench-sweep:  ## the same 16-trial Optuna search with and without pruning: wall time, best objective -> bench/sweep.md
	$(PY) scripts/bench_sweep.py $(ARGS)

gpu-check:  ## the pipeline on this machine's GPUs (one, then all under DDP) -> bench/gpu_check.md; exits 0 without
	$(PY) scripts/gpu_check.py $(ARGS)

docs:  ## the documentation site (MkDocs, --strict) into site/, its configuration reference regenerated first
	$(PY) scripts/docs_hooks.py
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet

lint:  ## ruff's checks and formatting over the package, the scripts and the tests
	.venv/bin/ruff check pipeline scripts tests
	.venv/bin/ruff format --check pipeline scripts tests
