# The two commands a newcomer needs: `make demo` runs the product, `make test` runs every test.
#
# Every install comes from uv.lock (exact versions and hashes). uv itself is pinned below and
# installed with pip into .tools/; it uses the Python that runs make, never a downloaded one.
PYTHON     ?= python3
UV_VERSION := 0.13.9
VENV       := .venv
BIN        := $(VENV)/bin
TOOLS      := .tools
UV         := $(TOOLS)/bin/uv
STAMP      := $(VENV)/.installed
# Parallel test processes (pytest-xdist): one per core by default; `make test JOBS=0` runs serially.
JOBS       ?= auto

export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo demo-cluster test lint typecheck unit bench profile soak format lock upgrade widget clean screenshots

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet 'uv==$(UV_VERSION)'

# --locked: stop with an error when uv.lock does not match pyproject.toml (run `make lock`).
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --extra dev --compile-bytecode --python $(PYTHON)
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/widget-server demo

# The demo on a fresh local Valkey cluster (3 masters, 3 replicas) with two nodes.
demo-cluster: $(STAMP)
	$(BIN)/widget-server demo --cluster

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Byte-compiled once here, so the many server and CLI processes the tests start need not
# compile the package each time (PYTHONDONTWRITEBYTECODE is common on CI machines).
unit: $(STAMP)
	$(BIN)/python -m compileall -q widget_server
	$(BIN)/pytest -n $(JOBS)

# The README's screenshots: every browser test, writing its pictures into docs/img (tests write
# them into a temporary folder otherwise).
screenshots: $(STAMP)
	SCREENSHOTS_DIR=docs/img $(BIN)/pytest -n $(JOBS) -m browser

bench: $(STAMP)
	$(BIN)/python benchmarks/goals.py
	$(BIN)/python benchmarks/cluster.py

# A py-spy flame graph of a server process while a live offer reaches 2,000 visitors.
profile: $(STAMP)
	$(BIN)/python benchmarks/profile.py

# Minutes of visitors under store crashes and node restarts (not part of `make test`).
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# After editing dependencies in pyproject.toml: re-resolve, keeping every other pin.
lock: $(UV)
	$(UV) lock

# A deliberate upgrade of everything to the newest allowed versions (commit uv.lock on its own).
upgrade: $(UV)
	$(UV) lock --upgrade

# After editing widget/: rebuild the widget's two scripts into widget_server/static/widget/ and
# commit them (the server and the tests use the built files; only this target needs Node 18+ and
# npm). esbuild is pinned in widget/package-lock.json.
widget:
	cd widget && npm ci --no-audit --no-fund && node build.mjs

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist widget/node_modules
