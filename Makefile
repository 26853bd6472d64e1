# pai-monitoring: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
# Ansible, molecule and the Ansible linters (tests/hosts/setup.sh)
ANSIBLE_VENV := .cache/molecule-venv
UNIT_MARKERS := not integration and not molecule and not e2e and not gpu_hardware

.PHONY: help deps hosts lintenv check lint types unit docs docs-check integration molecule e2e test demo demo-down bench wheel wheelhouse collection clean

help:
	@echo "make demo       sandbox cluster on this machine, deployed by pai.monitoring.site (MONITORING=2: HA tier)"
	@echo "make demo-down  remove the sandbox"
	@echo "make test       everything: lint, types, unit, rules, integration, molecule, end-to-end (with a time table)"
	@echo "make check      the fast tier: lint (Python, YAML, Ansible), types, unit and rule tests"
	@echo "make docs       regenerate docs/metrics.md and docs/alerts.md"
	@echo "make bench      benchmarks (figures, not pass/fail)"
	@echo "make wheelhouse dist/wheelhouse: the wheels the hosts install, for their Python (3.11, 3.13)"
	@echo "make collection dist/pai-monitoring-<version>.tar.gz: the Ansible collection pai.monitoring"

deps:
	tools/bootstrap.sh

# systemd guest images, Ansible virtualenv, wheelhouse, ssh client configuration (molecule and end-to-end stages)
hosts: deps
	tests/hosts/setup.sh

lint: deps lintenv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(ANSIBLE_VENV)/bin/yamllint --strict .
	PATH="$(CURDIR)/$(ANSIBLE_VENV)/bin:$$PATH" ANSIBLE_ROLES_PATH="$(CURDIR)/roles" \
	  ANSIBLE_COLLECTIONS_PATH="$(CURDIR)/.cache/collections" \
	  ANSIBLE_HOME="$(CURDIR)/.cache/ansible-home" NO_COLOR=1 PY_COLORS=0 \
	  $(ANSIBLE_VENV)/bin/ansible-lint --profile production --nocolor --offline

types: deps
	$(VENV)/bin/mypy

unit: deps lintenv
	$(PYTEST) -m "$(UNIT_MARKERS)"

docs: deps
	$(PY) -m pai_monitoring.metrics_doc docs/metrics.md
	$(PY) tools/gen_alerts_doc.py

# the fast tier needs only the Ansible virtualenv (linters, local preflight plays), not the guest images
lintenv:
	tests/hosts/setup.sh --venv-only

check: lint types unit

# Four workers: the tier mostly waits (Prometheus rule windows, daemons' deadlines, slow clients), measured 65 s of
# CPU in 410 s of wall time run one test at a time.
integration: deps
	$(PYTEST) -m integration -n 4

molecule: hosts
	tests/hosts/run-molecule.sh

e2e: hosts
	$(PYTEST) -m e2e --capture=tee-sys tests/e2e

# Each stage in turn, then a table of the wall and CPU time each took (tools/stages.sh; also in .cache/stages.md).
test:
	tools/stages.sh hosts check integration molecule e2e

# The sandbox prepares this machine itself (tests/hosts/setup.sh, its first timed phase): no .venv needed.
# MONITORING=2: a second monitoring guest (Prometheus replicas, an Alertmanager cluster); docs/demo.md.
demo:
	sandbox/demo.sh up $(if $(MONITORING),--monitoring $(MONITORING))

demo-down:
	sandbox/demo.sh down

bench: deps
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done

wheel: deps
	$(PY) -m build --wheel --outdir dist .

# What a controller deploys a site with (README, "Deploy on a real cluster"); neither needs the project's .venv.
# tools/wheelhouse.sh -p X.Y -a ARCH builds for other hosts.
wheelhouse:
	tools/wheelhouse.sh -o dist/wheelhouse

ANSIBLE_GALAXY ?= ansible-galaxy
collection:
	$(ANSIBLE_GALAXY) collection build --force --output-path dist .

clean:
	rm -rf dist build .mypy_cache .ruff_cache .pytest_cache
