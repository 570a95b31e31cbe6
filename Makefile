# qa-ws: every target sets up .venv itself, so each works on a fresh clone with only Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: install install-perf serve test lint format bench bench-ci bench-overhead perf perf-quick perf-budget perf-count perf-gate run-websocket run-websocket-demo test-websocket clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install qa-ws with its test tools

PERF_STAMP := $(VENV)/.perf-stamp
$(PERF_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,perf]'
	@touch $(PERF_STAMP)

install-perf: $(PERF_STAMP)  ## the benchmark-only tools (the perf extra: picows, uvloop, python-socketio, py-spy)

serve: install  ## serve with the embedded demo agent on 127.0.0.1:8765 (dev mode: prints a token)
	$(BIN)/qa-ws serve --dev $(ARGS)

run-websocket: serve  ## the original plan's name for `serve`

run-websocket-demo: install  ## start a local server and play the scripted demos
	$(BIN)/qa-ws demo $(ARGS)

test: install-perf  ## the whole suite, with coverage (fails under 90 %)
	$(BIN)/python -m pytest --cov=qa_ws_cli --cov-report=term $(ARGS)

test-websocket: test  ## the original plan's name for `test`

lint: install-perf  ## ruff (lint and format check) and mypy --strict
	$(BIN)/ruff check qa_ws_cli tests loadtests benchmarks
	$(BIN)/ruff format --check qa_ws_cli tests loadtests benchmarks
	$(BIN)/mypy qa_ws_cli benchmarks

format: install
	$(BIN)/ruff format qa_ws_cli tests loadtests benchmarks
	$(BIN)/ruff check --fix qa_ws_cli tests loadtests benchmarks

bench: install  ## the acceptance gate: 150 users for 30 s against a local server
	$(BIN)/qa-ws bench --serve --users 150 --duration 30s $(ARGS)

bench-ci: install  ## the CI performance gate: 150 users, about 15 s, a streaming agent
	$(BIN)/qa-ws bench --serve --agent demo --demo-latency-ms 200 --users 150 --spawn-rate 75 --duration 15s \
		--max-p95-ms 500 --max-ttft-p95-ms 250 \
		--report-json reports/bench.json --report-junit reports/bench.xml --report-html reports/bench.html $(ARGS)

bench-overhead: perf  ## the original name of `perf` (it replaced loadtests/gateway_overhead.py)

perf: install-perf  ## every server side by side (about 4 minutes): chats, streaming, idle memory, handshakes
	$(BIN)/python -m benchmarks.perf --json reports/perf.json $(ARGS)

perf-quick: install-perf  ## the same, short rounds (under a minute)
	$(BIN)/python -m benchmarks.perf --quick --json reports/perf-quick.json $(ARGS)

perf-budget: install-perf  ## CPU per chat by stage in qa-ws serve (py-spy and feature toggles, about 1.5 minutes)
	$(BIN)/python -m benchmarks.budget $(ARGS)

perf-count: install-perf  ## instructions per chat and handshake, counted by valgrind (about 2 minutes): repeatable on a busy machine
	$(BIN)/python -m benchmarks.instructions $(ARGS)

# the floors: today's shares (0.41 a chat and a handshake) less more than the run-to-run spread (8 %)
PERF_GATE := --only bare-uvloop qa-ws --min-chat-share 0.36 --min-handshake-share 0.36
perf-gate: install-perf  ## CI: fail when qa-ws's instructions per chat or handshake grow against bare's (valgrind, about a minute)
	$(BIN)/python -m benchmarks.instructions $(PERF_GATE) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov reports
