# nbgate — organizer and developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
NOTEBOOK_IMAGE ?= nbgate/notebook:latest
BASE_IMAGE ?=
BIN := target/release/nbgate
DEV_BIN := target/debug/nbgate

# `make up` settings, mapped to NBGATE_* (anything else: set NBGATE_* yourself).
REGISTRATION_KEY ?=
POOL_SIZE ?=
MEMORY_LIMIT ?=
CPU_LIMIT ?=
MAX_CONTAINERS ?=
BIND ?=
# With FQDN (after `make secrets`): HTTPS on :443 with the certificate in
# state/tls, and plain HTTP on :80 redirecting to it.
FQDN ?=
TLS_DIR ?= state/tls
UP_ENV = $(if $(FQDN),NBGATE_TLS_CERT=$(TLS_DIR)/fullchain.pem NBGATE_TLS_KEY=$(TLS_DIR)/privkey.pem \
           NBGATE_BIND=$${NBGATE_BIND:-0.0.0.0:443} NBGATE_HTTP_REDIRECT_BIND=$${NBGATE_HTTP_REDIRECT_BIND:-0.0.0.0:80}) \
         $(if $(REGISTRATION_KEY),NBGATE_REGISTRATION_KEY='$(REGISTRATION_KEY)') \
         $(if $(POOL_SIZE),NBGATE_POOL_SIZE=$(POOL_SIZE)) \
         $(if $(MEMORY_LIMIT),NBGATE_MEMORY_LIMIT=$(MEMORY_LIMIT)) \
         $(if $(CPU_LIMIT),NBGATE_CPU_LIMIT=$(CPU_LIMIT)) \
         $(if $(MAX_CONTAINERS),NBGATE_MAX_CONTAINERS=$(MAX_CONTAINERS)) \
         $(if $(BIND),NBGATE_BIND=$(BIND))

.PHONY: help images build release dev up test lint check nuke backup restore verify bench soak secrets

DEST ?=
SRC ?=

help: ## This list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

images: ## Build the notebook image with no registry (mmdebstrap -> docker import -> JupyterLab); BASE_IMAGE=<image> to start from a registry image
	@NOTEBOOK_IMAGE='$(NOTEBOOK_IMAGE)' BASE_IMAGE='$(BASE_IMAGE)' bash docker/build-images.sh

build: ## Build the nbgate binary (debug)
	$(CARGO) build

release: ## Build the nbgate binary (release)
	$(CARGO) build --release

dev: images build ## Build what is missing and serve on http://127.0.0.1:8000 with registration key `test`
	NBGATE_REGISTRATION_KEY=$${NBGATE_REGISTRATION_KEY:-test} NBGATE_POOL_SIZE=$${NBGATE_POOL_SIZE:-2} \
	  NBGATE_BCRYPT_COST=$${NBGATE_BCRYPT_COST:-10} $(DEV_BIN) serve

up: images release ## Production-style, in the foreground: make up REGISTRATION_KEY=… POOL_SIZE=50 MEMORY_LIMIT=512m
	$(UP_ENV) $(BIN) serve

check: build ## Environment doctor: Docker, image, state dir, hot-binding, database
	$(DEV_BIN) check

test: images ## Unit and integration tests (real Docker, real JupyterLab)
	@docker info >/dev/null 2>&1 || { echo "make test: no Docker engine answers — start dockerd (tests never skip Docker)" >&2; exit 1; }
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --no-fail-fast; \
	else \
	  $(CARGO) test --no-fail-fast; \
	fi
	cd bench/loadgen && CARGO_TARGET_DIR=target $(CARGO) test --release

lint: ## rustfmt check and clippy with -D warnings (nbgate and the bench's load generator)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	cd bench/loadgen && $(CARGO) fmt -- --check && CARGO_TARGET_DIR=target $(CARGO) clippy --release -- -D warnings

backup: build ## Back up every user volume: make backup DEST=/srv/backups/today
	@test -n "$(DEST)" || { echo "make backup: give DEST=<directory>" >&2; exit 2; }
	$(DEV_BIN) volume backup --dest "$(DEST)"

verify: build ## Check a backup against its manifest: make verify SRC=…
	@test -n "$(SRC)" || { echo "make verify: give SRC=<directory>" >&2; exit 2; }
	$(DEV_BIN) volume verify --src "$(SRC)"

restore: build ## Restore volumes from a backup (verified first): make restore SRC=… [USER_NAME=name]
	@test -n "$(SRC)" || { echo "make restore: give SRC=<directory>" >&2; exit 2; }
	$(DEV_BIN) volume restore --src "$(SRC)" $(if $(USER_NAME),--user "$(USER_NAME)")

secrets: ## Let's Encrypt certificate into state/tls with certbot: make secrets FQDN=… EMAIL=… [ACME_SERVER=… ACME_WEBROOT=…]
	bash scripts/secrets.sh

nuke: ## Remove this instance's containers (never volumes); INSTANCE=… (default nbgate)
	@inst=$${NBGATE_INSTANCE:-$(or $(INSTANCE),nbgate)}; \
	ids=$$(docker ps -aq --filter "label=nbgate.instance=$$inst"); \
	if [ -n "$$ids" ]; then docker rm -f $$ids >/dev/null && echo "removed $$(echo $$ids | wc -w) container(s) of $$inst; volumes kept"; \
	else echo "no containers of $$inst"; fi

soak: ## 30 minutes of clients hammering a culled slot; memory and descriptors must stay flat (SOAK_SECONDS=1800)
	NBGATE_SOAK_SECONDS=$${SOAK_SECONDS:-1800} $(CARGO) nextest run --test faults --no-capture fault_hammering_a_culled_slot

bench: ## Side-by-side benchmarks (BENCH.md): nbgate vs nginx, CHP, JupyterHub, direct -> bench/report.md, bench/report.json
	bash bench/run.sh
