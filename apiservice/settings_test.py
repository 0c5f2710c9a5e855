"""Settings for the test suite: the production settings, served over plain HTTP on loopback."""

import os
import re

# Each xdist worker (and the servers it starts, which inherit PYTEST_XDIST_WORKER) gets its own Redis
# database, so brokers, caches and rate-limit counters never mix between parallel test processes.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_index = int(_worker[2:]) if _worker.startswith("gw") else 0
_base = int(os.environ.get("TEST_REDIS_DB_BASE", "1"))
if os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = re.sub(r"(/\d+)?$", f"/{_base + _index}", os.environ["REDIS_URL"].rstrip("/"), count=1)
    os.environ.pop("CELERY_BROKER_URL", None)

# Suites that hammer one key (schemathesis, bursts) must not meet the free plan's 60/minute limit:
# unaccounted organisations are on enterprise in tests; billing's own tests opt into "free".
os.environ.setdefault("BILLING_DEFAULT_PLAN", "enterprise")

from .settings import *  # noqa: E402, F403
from .settings import STORAGES  # noqa: E402

DEBUG = False
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SECURE_HSTS_SECONDS = 0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast user creation in tests
# Manifest names do not exist without collectstatic; live-server tests serve the plain files.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
