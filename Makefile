# ModelMeter: one command per job. `make run` for the product, `make test` for the suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

# Tests run against PostgreSQL and Redis (started if needed by .ci/services); override as you like.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
PYTEST_WORKERS ?= 2

.PHONY: help venv run seed worker beat test test-fast lint format typecheck schema migrations-check check-deploy ci bench bench-batch bench-edge clean bench-dashboard test-browser

help:
	@grep -E '^[a-z-]+:.*?## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3.11 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP) ## Create the virtualenv and install everything

run: $(STAMP) ## Run the product (web + worker + beat) on the embedded default, with the demo seeded
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py migrate --noinput
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py collectstatic --noinput -v0
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py seed_demo
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(VENV)/bin/honcho -f Procfile start

worker: $(STAMP) ## A Celery worker alone
	$(VENV)/bin/celery -A apiservice worker --loglevel=INFO

beat: $(STAMP) ## Celery beat alone
	$(VENV)/bin/celery -A apiservice beat --loglevel=INFO

test: $(STAMP) ## Run the whole test suite against PostgreSQL and Redis (what CI runs)
	bash .ci/services
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile -q $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(STAMP) ## mypy with the Django and DRF plugins
	$(VENV)/bin/mypy apiservice billing models_registry inference edge portal batches

schema: $(STAMP) ## Validate the OpenAPI schema (warnings fail)
	DJANGO_SETTINGS_MODULE=apiservice.settings_test $(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null

migrations-check: $(STAMP)
	DJANGO_SETTINGS_MODULE=apiservice.settings_test $(PY) manage.py makemigrations --check --dry-run

check-deploy: $(STAMP) ## Django's deployment checklist with production settings
	DJANGO_SECRET_KEY=$$(python3 -c 'import secrets;print(secrets.token_urlsafe(64))') \
	EDGE_SIGNING_KEY="$$($(PY) -c 'from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey as K; from cryptography.hazmat.primitives import serialization as s; print(K.generate().private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()).decode())')" \
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) DJANGO_ALLOWED_HOSTS=api.example.com \
		$(PY) manage.py check --deploy --fail-level WARNING

ci: lint typecheck schema migrations-check check-deploy test ## Everything CI runs

bench: $(STAMP) ## Online inference benchmark (see docs/benchmarks.md)
	bash .ci/services
	$(PY) bench/online.py

clean:
	rm -rf var staticfiles test-artifacts .pytest_cache .mypy_cache .ruff_cache

bench-metering: $(STAMP) ## Metering on vs off on the same gunicorn + PostgreSQL + Redis stack (docs/billing.md)
	bash .ci/services
	$(PY) bench/metering.py

bench-edge: $(STAMP) ## Edge bundles: size, build time, run.py latency per variant (see docs/edge.md)
	$(PY) bench/edge.py

bench-dashboard: $(STAMP) ## Staff dashboard with 1M ledger rows in PostgreSQL (see docs/portal.md)
	bash .ci/services
	DATABASE_URL=$${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/mm_portal_bench} $(PY) bench/dashboard.py

test-browser: $(STAMP) ## Only the Playwright + Chromium portal tests (needs /usr/bin/chromium)
	bash .ci/services
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(VENV)/bin/pytest -m browser -q $(PYTEST_ARGS)

bench-batch: $(STAMP) ## Batch benchmark: 1M rows through API + Celery vs the single-process loop (BENCH_ROWS=...)
	bash .ci/services
	$(PY) bench/batch.py --rows $${BENCH_ROWS:-1000000} --workers 1 2 --rss-rows $${BENCH_RSS_ROWS:-100000}
