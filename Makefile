# kvscale — developer entry points. Everything installs into ./.venv (created on demand).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install generate lint typecheck crd-check chart-check k8s-tools check test test-unit test-integration e2e engine-install engine-tier demo-cluster bench bench-quick bench-replay-quick demo clean image image-smoke image-lock image-lock-debian

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,sim]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check operator tests bench e2e image
	$(BIN)/ruff format --check operator tests bench e2e image
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

# helm, kubeconform and the Pod Security checker, built from Go modules once and cached per
# version outside the repo (~7 min cold, mostly helm; nothing when cached).
k8s-tools:
	e2e/scripts/install-k8s-tools.sh

# helm lint --strict; kubeconform -strict on the chart, CRDs, examples and the engine objects
# the operator renders (Kubernetes 1.28 to the newest kubernetes-validate ships); Pod Security
# "restricted" for the chart's pods, "baseline" for every engine pod, "restricted" for the
# engine pods a template makes non-root.
chart-check: install k8s-tools
	PYTHON=$(BIN)/python e2e/scripts/chart-check.sh

# Lint, types, generated-file drift, unit + integration tiers (no cluster; ~2.5 min).
check: lint typecheck crd-check
	$(BIN)/pytest -q

# The e2e tier: builds the control plane on first use (cached per version), then the scenarios.
e2e: install
	$(BIN)/pytest -m "e2e and not engine" e2e -q -rPfE --durations=25

# The real vLLM (CPU build) for the engine tier: installed once per version outside the repo
# (~6 GB, ~8 min cold, download-bound; idempotent). Safe to run beside the control-plane build.
engine-install:
	nice -n 10 e2e/scripts/install-vllm.sh

# The engine tier: kvscale's KV arithmetic, rendered flags, metric queries and simulator checked
# against the real engine (installs it first when missing), and the e2e scenario whose pods are
# real engines (needs the e2e control plane, built by the e2e tier).
engine-tier: install engine-install
	$(BIN)/pytest -m engine e2e/engine -q -rPfE --durations=25

# The e2e stack with a live view while a trace replays (about 6 minutes, warm cache).
demo-cluster: install
	cd e2e && ../$(BIN)/python demo_cluster.py

# Everything CI runs (.ci/run calls this), cheapest first: lint, types and the Python tiers;
# every bench at smoke size; the operator image; the real-engine tier; e2e; the chart checks.
# The heavy installs each wait on their own lock, so .ci/run can start them in the background.
test: check bench-quick image-smoke engine-tier e2e chart-check

# The operator's OCI image archive, built without Docker (docs/image.md): dist/*.oci.tar.
# Needs root; stages are cached under $$XDG_CACHE_HOME/kvscale/image by input hash.
image: install
	image/install-tools.sh
	$(BIN)/python image/build_image.py

# Unpack the archive and run `kvscale --version` (and import/lock checks) from its rootfs.
image-smoke: image
	$(BIN)/pytest -m image image/test_image.py -q

# Re-pin the image's Python wheels (hashed) after a change to pyproject's dependencies.
image-lock: install
	$(BIN)/python image/lock_wheels.py

# Re-pin the image's Debian packages (after a Debian point release replaced a version).
image-lock-debian: install
	image/install-tools.sh
	$(BIN)/python image/build_image.py --update-debian-lock

bench: install
	$(BIN)/python bench/capacity_accuracy.py

# Every benchmark in bench/ at its smoke size (`--quick`), so none can rot unnoticed (~5 min;
# operator_scale needs the `prometheus` binary on PATH).
bench-quick: install
	@# Smoke size: every bench must run to its end. Exit 3 = "ran, a target missed": printed,
	@# not fatal here (make bench gates the capacity targets); any other failure is.
	@for bench in $$(grep -l '__main__' bench/*.py); do \
	  echo "== $$bench --quick"; rc=0; $(BIN)/python $$bench --quick || rc=$$?; \
	  [ $$rc -eq 0 ] || [ $$rc -eq 3 ] || exit $$rc; \
	done

# The autoscaling replay at smoke size (every trace shortened; the hindsight optimum included).
bench-replay-quick: install
	$(BIN)/python bench/autoscale_replay.py --quick --no-speed

demo: install
	$(BIN)/kvscale demo

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache
