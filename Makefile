# Wharf - local development and CI entry points. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEVHOST_PORT ?= 7071
STACK := scripts/stack.sh
STACK_ENV := $(CURDIR)/.local/stack.env

VENV_STAMP := $(VENV)/.wharf-installed
NODE_STAMP := node_modules/.wharf-installed
TOOLS_VENV ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.wharf-installed
KUSTO_STAMP := tools/kusto/node_modules/.wharf-installed

export VENV

.PHONY: help setup system venv node infra-tools infra-check stack-start stack-stop stack-status run test lint typecheck bench clean-local

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: system venv node ## everything below: system packages, Python venv, node_modules

system: ## apt-get install openssh-server, rclone, ... when missing (root in CI)
	@scripts/install-system-deps.sh

venv: $(VENV_STAMP) ## .venv with requirements-dev.txt and `pip install -e .` (re-run when requirements change)

$(VENV_STAMP): requirements.txt requirements-dev.txt pyproject.toml | system
	@test -x $(PY) || { echo "[venv] creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -q -e .
	@touch $@

node: $(NODE_STAMP) ## node_modules (Azurite) from package-lock.json (npm ci)

$(NODE_STAMP): package.json package-lock.json | system
	@scripts/node-deps.sh
	@touch $@

infra-tools: $(TOOLS_STAMP) $(KUSTO_STAMP) ## checkov (own venv, .venv-tools) and the Kusto language service (tools/kusto) for the infra checks

$(TOOLS_STAMP): requirements-tools.txt | system
	@test -x $(TOOLS_VENV)/bin/python || { echo "[infra-tools] creating $(TOOLS_VENV)"; $(PYTHON) -m venv $(TOOLS_VENV); }
	$(TOOLS_VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements-tools.txt
	@touch $@

$(KUSTO_STAMP): tools/kusto/package.json tools/kusto/package-lock.json | system
	cd tools/kusto && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

infra-check: infra-tools ## checkov over infra/ (Bicep); fails on any finding not skipped with a reason next to its resource
	@scripts/infra-check.sh

stack-start: system node ## start Azurite + sshd (idempotent), write .local/stack.env
	@$(STACK) start

stack-stop: ## stop the processes stack-start started
	@$(STACK) stop

stack-status: ## show whether Azurite and sshd are running
	@$(STACK) status || true

run: setup stack-start ## start the stack, then devhost in the foreground (Ctrl-C stops devhost; `make stack-stop` the stack)
	@set -a; . $(STACK_ENV); set +a; \
	echo ""; \
	echo "Wharf devhost on http://127.0.0.1:$(DEVHOST_PORT)"; \
	echo "  health:           http://127.0.0.1:$(DEVHOST_PORT)/api/health"; \
	echo "  demo SFTP folder: $$SFTP_DEMO_DIR  (drop files in outbound/, deliveries land in inbound/)"; \
	echo "  SFTP:             sftp -P $$SFTP_PORT -i $$SFTP_CLIENT_KEY -o UserKnownHostsFile=$$SFTP_KNOWN_HOSTS $$SFTP_USER@$$SFTP_HOST"; \
	echo "  jobs:             $(VENV)/bin/wharf jobs list"; \
	echo "  logs:             .local/logs/  (stop the stack with: make stack-stop)"; \
	echo ""; \
	export WHARF_STACK_ENV=$(STACK_ENV); \
	$(VENV)/bin/wharf resources ensure; \
	exec $(PY) -m devhost --port $(DEVHOST_PORT)

test: setup infra-tools ## ruff + mypy + checkov + pytest with the stack up; stops the stack afterwards (unless it was already running)
	@scripts/with-stack.sh scripts/test.sh

lint: venv ## ruff check
	$(VENV)/bin/ruff check .

typecheck: venv ## mypy
	$(VENV)/bin/mypy

bench: setup ## benchmarks (python -m benchmarks) with the stack up
	@if [ -f benchmarks/__main__.py ]; then \
		scripts/with-stack.sh $(PY) -m benchmarks; \
	else \
		echo "no benchmarks yet (benchmarks/__main__.py missing)"; \
	fi

clean-local: ## stop the stack and delete .local/ (Azurite data, keys, demo SFTP folder, logs)
	@$(STACK) stop
	rm -rf .local
