# kvscale — developer entry points. Everything installs into ./.venv (created on demand).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install generate lint typecheck crd-check check test test-unit test-integration e2e demo-cluster bench bench-replay-quick demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check operator tests bench e2e
	$(BIN)/ruff format --check operator tests bench e2e
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Rewrite every generated file after a change to the API models or the chart.
generate: install
	$(BIN)/kvscale crd > crds/kvscale.dev_llmdeployments.yaml
	cp crds/kvscale.dev_llmdeployments.yaml charts/kvscale/crds/
	$(BIN)/kvscale crd --docs > docs/api.md
	$(BIN)/python manifests/regenerate.py

crd-check: install
	$(BIN)/kvscale crd > $(VENV)/crd.generated.yaml
	diff -u crds/kvscale.dev_llmdeployments.yaml $(VENV)/crd.generated.yaml
	diff -u charts/kvscale/crds/kvscale.dev_llmdeployments.yaml $(VENV)/crd.generated.yaml

test-unit: install
	$(BIN)/pytest tests/unit -q

test-integration: install
	$(BIN)/pytest tests/integration -q

# Lint, types, generated-file drift, unit + integration tiers (no cluster; ~2.5 min).
check: lint typecheck crd-check
	$(BIN)/pytest -q

# The e2e tier: builds the control plane on first use (cached per version), then the scenarios.
e2e: install
	$(BIN)/pytest -m e2e e2e -q -rP --durations=0

# The e2e stack with a live view while a trace replays (about 6 minutes, warm cache).
demo-cluster: install
	cd e2e && ../$(BIN)/python demo_cluster.py

# Everything CI runs (.ci/run calls this): check, then e2e.
test: check e2e

bench: install
	$(BIN)/python bench/capacity_accuracy.py

# The autoscaling replay at smoke size (every trace shortened; the hindsight optimum included).
bench-replay-quick: install
	$(BIN)/python bench/autoscale_replay.py --quick --no-speed

demo: install
	$(BIN)/kvscale demo

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache
