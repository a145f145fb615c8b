# Two commands do everything on a fresh machine: `make gate` (the gate) and `make test` (our tests).
# Both set up a .venv with the pinned packages and Debian's prometheus/alertmanager first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup gate images test lint smoke bench clean system-packages

setup: $(STAMP) system-packages

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Prometheus and Alertmanager are real processes in the monitoring scenarios; Chromium renders
# the HTML report in the project's tests; curl and jq are what the shell deployers of the
# project's zoo (tests/deployers/) are written with; capsh runs a test as root without the right to mount.
system-packages:
	@missing=""; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v jq >/dev/null || missing="$$missing jq"; \
	command -v flock >/dev/null || missing="$$missing util-linux"; \
	command -v capsh >/dev/null || missing="$$missing libcap2-bin"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "The gate needs the Debian packages:$$missing. Install them as root:"; \
	    echo "  apt-get install$$missing"; exit 1; \
	  fi; \
	fi

# TARGET=docker: the same stack as real containers. Installs Debian's docker.io and starts dockerd
# when no engine answers (stopped at the end), builds the missing images, removes its containers.
# On the embedded stack the scenarios run in GATE_WORKERS pytest-xdist workers, each with its own
# stack and ports (one report for the run). A worker mostly waits (loads, alert windows, traffic),
# so two per core, at most 4: on 2 cores 4 workers took 105-111 s against 158-170 s with 2 and
# 289 s in one process; past 4 little is gained (6: 103 s). GATE_WORKERS=0: one process.
TARGET ?= local
GATE_WORKERS ?= $(shell cores=$$(nproc 2>/dev/null || echo 1); echo $$(( cores >= 2 ? 4 : 2 )))
gate: setup
ifeq ($(TARGET),docker)
	$(PY) -m suite.targets.engine run --images deploy/platform.yaml -- \
	  $(PY) -m pytest scenarios --target docker $(PYTEST_ARGS)
else ifeq ($(TARGET),local)
	$(PY) -m pytest scenarios --target local -n $(GATE_WORKERS) $(PYTEST_ARGS)
else
	$(PY) -m pytest scenarios --target $(TARGET) $(PYTEST_ARGS)
endif

# The images of --target docker and the gate image, from deploy/images/ and the Dockerfile; without
# any image registry, the base is built from Debian packages. IMAGES_ARGS="--rebuild" for all.
IMAGES_ARGS ?=
images: setup
	$(PY) -m suite.targets.images $(IMAGES_ARGS)

smoke: setup
	$(PY) -m pytest scenarios -m smoke $(PYTEST_ARGS)

# Our tests include real containers (tests/test_docker_target.py, the gate image as the PostSync
# hook): under an engine session like `make gate TARGET=docker`; without Docker they skip, saying why.
# They run in TEST_WORKERS xdist workers: most of them wait (servers, alert windows, gate runs), so
# on 2 cores 3 workers overlap the waits. Each file runs whole in one worker (its costly fixtures
# built once), the longest files first (tests/scheduling.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= $(shell cores=$$(nproc 2>/dev/null || echo 1); echo $$(( cores >= 2 ? 2 : 0 )))
test: setup lint
	$(PY) -m suite.targets.engine run --optional --images deploy/platform.yaml \
	  --only triton mlflow prometheus alertmanager gate -- \
	  $(PY) -m pytest tests scenarios -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# ruff, with the project's line length (pyproject.toml): lint errors and unformatted files fail.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Medians of the PostSync hook, the gate, the smoke subset and each deploy stage against its floor;
# the table goes to reports/out/bench/bench.md and into README.md's bench block, beside the figures
# it had (with a .ci/run's reports/out/ci-timing.json, its `make test` too).
# BENCH_ARGS="--runs 1 --smoke-runs 3" for a quicker one.
BENCH_ARGS ?=
CI_TIMING := $(wildcard reports/out/ci-timing.json)
bench: setup
	$(PY) -m tools.bench --readme README.md --gate-args "scenarios -n $(GATE_WORKERS)" \
	  $(if $(CI_TIMING),--ci-timing $(CI_TIMING)) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) reports/out build *.egg-info
