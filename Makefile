# Two entry points (README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The lock (README, "Setup in detail"): exact versions of everything `make install` installs. `make lock`
# resolves pyproject.toml afresh and rewrites it and envs/vlalert.yaml; CI installs from it as is.
LOCK := requirements/lock-dev.txt
LOCKS := requirements/lock-runtime.txt $(LOCK)

.PHONY: demo test test-slurm install lint lock clean

# The locked pip first, then the locked packages, then the project itself without dependencies and
# without build isolation (setuptools is in the lock). tests/test_envs.py checks that the lock pins the
# whole closure of pyproject.toml's requirements, within their ranges (not `pip check`: it refuses
# decord's wheel, tagged cp36 inside though installable on any Python 3).
$(STAMP): pyproject.toml $(LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install "$$(grep -m1 '^pip==' $(LOCK))"
	$(BIN)/pip install -r $(LOCK)
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Regenerate the lock from pyproject.toml's ranges (newest matching versions; needs the package index),
# then `make install` installs them and `make test` tests them: commit the three files together.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python requirements/lock.py

demo: $(STAMP)
	$(BIN)/snakemake --cores all

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint
	$(BIN)/python -m pytest

# A real single-node SLURM cluster on this machine (apt: slurm-wlm, slurmdbd, munge, mariadb; daemons on
# 127.0.0.1; needs root) and the demo's data half (up to results/benchmark/manifest.json) through
# profiles/slurm in a fresh clone; every job must end COMPLETED in sacct. README, "On a cluster".
# Not part of `make test` / CI: it installs system packages and takes minutes (the run is printed).
test-slurm: $(STAMP)
	tests/cluster/run_demo_data_half.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
