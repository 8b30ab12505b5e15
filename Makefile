# The two commands of the README: `make demo` and `make test`.
# Both create .venv/ in the checkout and install treadle into it (editable,
# with every extra: the features, the test tools and the docs tools).
# `make docs` builds the documentation site into site/ (warnings are errors).
# `make typecheck` runs mypy over src/treadle (configured in pyproject.toml).
# `make slurm-up` / `make slurm-down` start and stop a one-node Slurm cluster for
# the batch-system tests (root only; the test run starts one itself when needed).
# `make test-fast` runs the suite without the slow, reference and slurm tests: the
# loop while editing; `make test` is the whole suite, as CI runs it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-fast typecheck docs setup system-packages slurm-up slurm-down clean

$(BIN)/treadle: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,test,docs]'
	touch $@

setup: $(BIN)/treadle

demo: setup
	$(BIN)/python examples/demo.py

# The reference tools (cctools 9.9) are needed by the differential and
# interoperability tests, a PostgreSQL server by the repository tests (they
# start their own, in a temporary directory), and FUSE, a C compiler (static too),
# libseccomp's resolver, strace and ImageMagick by the vfs tests; install them when we are
# root and they are missing.
system-packages:
	@if ! command -v makeflow >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends coop-computing-tools openmpi-bin >/dev/null; \
	fi
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends postgresql >/dev/null; \
	fi
	@missing=""; for p in fuse3 gcc libc6-dev seccomp strace imagemagick podman runc busybox-static; do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

# A one-node Slurm cluster on this machine (root only): the tests marked `slurm`
# start it themselves when it is down (and stop it again at the end); these
# targets keep one up between runs, or for trying `treadle run -T slurm` by hand.
slurm-up:
	bash ci/slurm-up.sh

slurm-down:
	bash ci/slurm-down.sh

# mkdocs-click imports the commands, so a broken CLI help fails the build too.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

typecheck: setup
	$(BIN)/mypy

test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow and not reference and not slurm"

# vfs doctor first: which vfs modes this machine allows, so that skipped vfs tests show why.
test: setup system-packages docs typecheck
	-$(BIN)/treadle vfs doctor
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
		$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) site build src/*.egg-info
