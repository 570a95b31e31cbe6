# qa-ws: every target sets up .venv itself, so each works on a fresh clone with only Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: install serve test lint format bench bench-ci bench-overhead run-websocket run-websocket-demo test-websocket clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install qa-ws with its test tools

serve: install  ## serve with the embedded demo agent on 127.0.0.1:8765 (dev mode: prints a token)
	$(BIN)/qa-ws serve --dev $(ARGS)

run-websocket: serve  ## the original plan's name for `serve`

run-websocket-demo: install  ## start a local server and play the scripted demos
	$(BIN)/qa-ws demo $(ARGS)

test: install  ## the whole suite, with coverage (fails under 90 %)
	$(BIN)/python -m pytest --cov=qa_ws_cli --cov-report=term $(ARGS)

test-websocket: test  ## the original plan's name for `test`

lint: install  ## ruff (lint and format check) and mypy --strict
	$(BIN)/ruff check qa_ws_cli tests loadtests
	$(BIN)/ruff format --check qa_ws_cli tests loadtests
	$(BIN)/mypy qa_ws_cli

format: install
	$(BIN)/ruff format qa_ws_cli tests loadtests
	$(BIN)/ruff check --fix qa_ws_cli tests loadtests

bench: install  ## the acceptance gate: 150 users for 30 s against a local server
	$(BIN)/qa-ws bench --serve --users 150 --duration 30s $(ARGS)

bench-ci: install  ## the CI performance gate: 150 users, about 15 s, a streaming agent
	$(BIN)/qa-ws bench --serve --agent demo --demo-latency-ms 200 --users 150 --spawn-rate 75 --duration 15s \
		--max-p95-ms 500 --max-ttft-p95-ms 250 \
		--report-json reports/bench.json --report-junit reports/bench.xml --report-html reports/bench.html $(ARGS)

bench-overhead: install  ## the gateway's cost per message and per idle connection, against bare aiohttp
	$(BIN)/python loadtests/gateway_overhead.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov reports
