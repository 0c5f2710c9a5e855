"""ModelMeter settings, read from the environment (see `.env.example`).

The embedded default needs no server: SQLite, local file storage, an in-process cache and a
filesystem Celery broker. Set `DATABASE_URL` / `REDIS_URL` for PostgreSQL and Redis.
"""

from pathlib import Path

import environ
from celery.schedules import crontab

from apiservice.storage import s3_storage

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- Core -----------------------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
# A development key is derived at first use when none is set and DEBUG is on; production must set one.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# An empty path (`NAME=` in a .env) means the default, never the current directory.
VAR_DIR = Path(env.str("MODELMETER_VAR_DIR", default="") or BASE_DIR / "var")
# Key for secrets we must read back (webhook signing secrets); defaults to one derived from SECRET_KEY.
FIELD_ENCRYPTION_KEY = env.str("FIELD_ENCRYPTION_KEY", default="")

# A key from VAR_DIR is this host's alone: `check --deploy` warns about it (apiservice.W006).
SECRET_KEY_FROM_VAR_DIR = not SECRET_KEY
if not SECRET_KEY:
    if not DEBUG and env.bool("DJANGO_REQUIRE_SECRET_KEY", default=False):
        raise environ.ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production")
    # Local development only: a per-checkout key kept outside the repo (var/ is git-ignored).
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _key_file = VAR_DIR / "secret_key"
    if not _key_file.exists():
        import secrets

        _key_file.write_text(secrets.token_urlsafe(50))
    SECRET_KEY = _key_file.read_text().strip()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "apiservice",
    "models_registry",
    "inference",
    "billing",
    "edge",
    "portal",
    "batches",
]

MIDDLEWARE = [
    "apiservice.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apiservice.middleware.APIGatewayMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "apiservice.upload_limits.UploadLimitMiddleware",  # before CsrfViewMiddleware, which reads the body
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "apiservice.urls"
WSGI_APPLICATION = "apiservice.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'modelmeter.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process and the Celery worker share the file without "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool(
    "DATABASE_PREPARED_STATEMENTS", default=True
):
    # Django turns psycopg's prepared statements off (threshold None) for connection poolers' sake, and
    # then even a statement that asks to be prepared (the ledger INSERT, on every API call) is parsed and
    # planned every time. With a threshold no statement reaches, only those that ask are prepared.
    DATABASES["default"]["OPTIONS"] = {**DATABASES["default"].get("OPTIONS", {}), "prepare_threshold": 2**31 - 1}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, Redis -----------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
                "IGNORE_EXCEPTIONS": True,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth -----------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/admin/login/"
# Seconds an API key's lookup may be served from the process-local cache. Revocation must take
# effect within one second, so this is capped at 1.0 (system check apiservice.E001).
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=1.0)
# last_used_at is written at most this often per key, to keep a write off the hot path.
API_KEY_LAST_USED_RESOLUTION_SECONDS = env.int("API_KEY_LAST_USED_RESOLUTION_SECONDS", default=60)

# --- I18N -----------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media files -----------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default="") or VAR_DIR / "media")
MEDIA_URL = "/media/"
_default_storage: dict[str, object] = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
if env.str("STORAGE_BACKEND", default="local") == "s3":
    _default_storage = s3_storage(
        bucket=env.str("S3_BUCKET"),
        endpoint_url=env.str("S3_ENDPOINT_URL", default=None),
        region=env.str("S3_REGION", default=None),
    )
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": env.str("STATICFILES_BACKEND", default="whitenoise.storage.CompressedManifestStaticFilesStorage")
    },
}
# Request bodies above this are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("MAX_REQUEST_BYTES", default=8 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Multipart uploads are parsed this many bytes at a time (Django's default is 64 KiB; see
# apiservice/uploadhandlers.py). A multiple of 4 (base64 bodies), at most 2**31 - 4.
FILE_UPLOAD_CHUNK_BYTES = env.int("FILE_UPLOAD_CHUNK_BYTES", default=1024 * 1024)
FILE_UPLOAD_HANDLERS = [
    "apiservice.uploadhandlers.MemoryUploadHandler",
    "apiservice.uploadhandlers.TemporaryUploadHandler",
]

# --- REST framework and schema --------------------------------------------------------------------
REST_FRAMEWORK = {
    # Deny by default: every endpoint needs a key; the few public ones opt out explicitly.
    "DEFAULT_AUTHENTICATION_CLASSES": ["apiservice.auth.APIKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["apiservice.auth.HasAPIKey"],
    "DEFAULT_PARSER_CLASSES": ["apiservice.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["apiservice.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "apiservice.renderers.ContentNegotiation",
    "DEFAULT_PAGINATION_CLASS": "apiservice.pagination.CursorPagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "apiservice.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ModelMeter API",
    "DESCRIPTION": "Hosted ONNX model inference: online (OIP v2 and :predict), usage and catalogue.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {},
    # The schema and its docs are public; they describe, they do not serve.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
}

# --- Celery ---------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("out", "processed"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # kombu's default (1 s) is also how long the worker waits after its slots were full before it
        # looks again: ~2 messages a second, so a cancel queued behind a 300-chunk batch waited minutes.
        "polling_interval": 0.1,
    }
    # This transport is not asynchronous, so a prefork pool would run in its blocking mode, where the
    # pool processes share one task pipe and its locks: one killed while holding them (OOM, kill -9)
    # hangs the worker. Threads have no such pipe. With Redis the worker stays prefork.
    CELERY_WORKER_POOL = "threads"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {}

# --- Model registry -------------------------------------------------------------------------------
MODEL_MAX_BYTES = env.int("MODEL_MAX_BYTES", default=200 * 1024 * 1024)
# Op domains beyond the standard ones (ai.onnx, ai.onnx.ml) a model may use.
MODEL_ALLOWED_EXTRA_DOMAINS = env.list("MODEL_ALLOWED_EXTRA_DOMAINS", default=[])
MODEL_VALIDATION_TIMEOUT_SECONDS = env.int("MODEL_VALIDATION_TIMEOUT_SECONDS", default=60)
MODEL_VALIDATION_MEMORY_BYTES = env.int("MODEL_VALIDATION_MEMORY_BYTES", default=4 * 1024**3)
# Where model files are copied when the storage backend has no local path (S3).
MODEL_CACHE_DIR = Path(env.str("MODEL_CACHE_DIR", default="") or VAR_DIR / "model-cache")

# --- Inference ------------------------------------------------------------------------------------
ORT_INTRA_OP_THREADS = env.int("ORT_INTRA_OP_THREADS", default=1)
# Calls one model runs at once per process (more wait their turn); 0: the CPUs the process may use
# divided by ORT_INTRA_OP_THREADS.
ORT_CONCURRENT_RUNS = env.int("ORT_CONCURRENT_RUNS", default=0)
# Sessions kept per process, as a cap on the sum of their model files' sizes (a proxy for memory).
ORT_SESSION_CACHE_BYTES = env.int("ORT_SESSION_CACHE_BYTES", default=1024 * 1024 * 1024)
INFERENCE_MAX_ROWS = env.int("INFERENCE_MAX_ROWS", default=1024)
# "reject" refuses NaN and infinities in float inputs; "allow" passes them to the model.
INFERENCE_NAN_POLICY = env.str("INFERENCE_NAN_POLICY", default="reject")

# --- Operations -----------------------------------------------------------------------------------
# /metrics answers only with `Authorization: Bearer <METRICS_TOKEN>`; with no token it is off (404).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Production-safe by default; `make run` and the test settings relax these for plain-HTTP loopback.
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^v2/health/", r"^healthz$"]
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = env.list("DJANGO_SILENCED_SYSTEM_CHECKS", default=[])

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "apiservice.logging.RequestIdFilter"}},
    "formatters": {"json": {"()": "apiservice.logging.JSONFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # "django": no handler of its own (Django's default adds a plain-text console one under DEBUG, which
    # printed each record twice in `make run`); its records reach the JSON handler at the root.
    "loggers": {"django": {"handlers": [], "level": "INFO"}, "django.db.backends": {"level": "WARNING"}},
}

# --- Billing (plans, limits, idempotency, Stripe) ---------------------------------------------------
# Off: no rate limits, quotas, budgets or idempotency on the request path (the ledger still records).
METERING_ENABLED = env.bool("METERING_ENABLED", default=True)
# Plan of organisations without a billing account (seeded: free, payg, enterprise).
BILLING_DEFAULT_PLAN = env.str("BILLING_DEFAULT_PLAN", default="free")
BILLING_PAST_DUE_GRACE_DAYS = env.int("BILLING_PAST_DUE_GRACE_DAYS", default=7)
BILLING_ENTITLEMENT_CACHE_SECONDS = env.float("BILLING_ENTITLEMENT_CACHE_SECONDS", default=5.0)
# Counters for rate limits, quotas and idempotency claims; empty = database only (no rate limit).
BILLING_REDIS_URL = env.str("BILLING_REDIS_URL", default=REDIS_URL)
BILLING_REDIS_TIMEOUT_SECONDS = env.float("BILLING_REDIS_TIMEOUT_SECONDS", default=0.5)
BILLING_REDIS_RETRY_SECONDS = env.float("BILLING_REDIS_RETRY_SECONDS", default=5.0)
BILLING_QUOTA_RESEED_SECONDS = env.int("BILLING_QUOTA_RESEED_SECONDS", default=300)
# Units a process leases from a rate/quota/budget counter at once (1: every call counted in Redis) and
# how long a quota lease lives; see billing/limits.py.
BILLING_LEASE_UNITS = env.int("BILLING_LEASE_UNITS", default=32)
BILLING_LEASE_SECONDS = env.float("BILLING_LEASE_SECONDS", default=1.0)
IDEMPOTENCY_TTL_HOURS = 24
# How long Redis keeps an Idempotency-Key's claim. The stored answer (PostgreSQL) lives the full TTL;
# the claim only has to outlive a call in flight, and a retry that comes after it is gone is still
# answered with the stored response and billed nothing (see billing/idempotency.py).
IDEMPOTENCY_CLAIM_SECONDS = env.int("IDEMPOTENCY_CLAIM_SECONDS", default=600)
# (path regex, meter) of billable POSTs: quota-checked and Idempotency-Key aware before the view runs.
BILLING_METERED_POSTS: list[tuple[str, str]] = [
    (r":predict$", "online_predictions"),
    (r"^/v2/models/.+/infer$", "online_predictions"),
]
# Stripe: with no secret key, Checkout, the portal and invoices answer 409 billing_not_configured.
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)
BILLING_PUBLIC_URL = env.str("BILLING_PUBLIC_URL", default="http://localhost:8000")
BILLING_USAGE_PUSH_BATCH = env.int("BILLING_USAGE_PUSH_BATCH", default=5000)
BILLING_USAGE_PUSH_MAX_BACKOFF_SECONDS = env.int("BILLING_USAGE_PUSH_MAX_BACKOFF_SECONDS", default=3600)
CELERY_BEAT_SCHEDULE.update(
    {
        "billing-usage-push": {"task": "billing.tasks.usage_push", "schedule": 60.0},
        # At a fixed hour (UTC), not every 24 h from beat's start: restarts (deploys) would postpone that
        # forever where the schedule file does not survive them.
        "billing-reconcile": {"task": "billing.tasks.usage_reconcile", "schedule": crontab(minute=30, hour=2)},
        "billing-idempotency-purge": {"task": "billing.tasks.idempotency_purge", "schedule": 3600.0},
    }
)
# --- Edge bundles ---------------------------------------------------------------------------------
# Ed25519 signing key for bundle manifests: a PKCS#8 PEM in EDGE_SIGNING_KEY (from a secret store) or a
# file. With neither, a development key is generated once at VAR_DIR/edge-signing-key.pem (git-ignored).
EDGE_SIGNING_KEY = env.str("EDGE_SIGNING_KEY", default="")
EDGE_SIGNING_KEY_FILE = env.str("EDGE_SIGNING_KEY_FILE", default="")
# Public keys of retired signing keys (base64 raw 32-byte keys or PEMs), still served at /v1/edge/keys.
EDGE_EXTRA_PUBLIC_KEYS = env.list("EDGE_EXTRA_PUBLIC_KEYS", default=[])
# A signed download URL works for this long (and is one billed download however many requests it takes).
EDGE_DOWNLOAD_URL_SECONDS = env.int("EDGE_DOWNLOAD_URL_SECONDS", default=300)
EDGE_GOLDEN_ROWS = env.int("EDGE_GOLDEN_ROWS", default=64)
EDGE_INT8_MIN_LABEL_AGREEMENT = env.float("EDGE_INT8_MIN_LABEL_AGREEMENT", default=0.99)
EDGE_INT8_MAX_RELATIVE_ERROR = env.float("EDGE_INT8_MAX_RELATIVE_ERROR", default=0.05)
# A build still "building" after this long is taken over by the next delivery (its worker died).
EDGE_BUILD_STALE_SECONDS = env.int("EDGE_BUILD_STALE_SECONDS", default=1800)
# Queue a bundle (all variants) for a version whenever an alias moves to it.
EDGE_BUILD_ON_ALIAS_MOVE = env.bool("EDGE_BUILD_ON_ALIAS_MOVE", default=False)
# --- Portal and staff dashboards --------------------------------------------------------------------
TEMPLATES[0]["OPTIONS"]["context_processors"].append("portal.context_processors.features")  # type: ignore[index]
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:home"
LOGOUT_REDIRECT_URL = "portal:login"
# Password resets and invitations. The embedded default prints mail to the console; production sets
# e.g. EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend with EMAIL_HOST/EMAIL_PORT/....
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="ModelMeter <no-reply@localhost>")
# Dotted paths called as hook(organisation=...) when someone signs up (billing: put them on the free plan).
PORTAL_SIGNUP_HOOKS: list[str] = env.list("PORTAL_SIGNUP_HOOKS", default=["portal.billing_link.signup_free_plan"])
# The dashboards read closed days from portal.UsageRollup; this keeps it fresh (idempotent, cheap).
CELERY_BEAT_SCHEDULE["portal-usage-rollup"] = {"task": "portal.usage_rollup_refresh", "schedule": 600.0}
# Versions whose validating process stopped mid-way (a restart) are failed with a reason, not left validating.
CELERY_BEAT_SCHEDULE["models-validation-sweep"] = {"task": "models_registry.tasks.validation_sweep", "schedule": 600.0}
# --- Batch inference ------------------------------------------------------------------------------
# Upload cap for /v1/files (multipart bodies above it are refused with 413 by APIGatewayMiddleware).
FILE_MAX_BYTES = env.int("FILE_MAX_BYTES", default=512 * 1024 * 1024)
# Rows per chunk (one Celery task each) and per vectorised ONNX Runtime call inside a chunk.
BATCH_CHUNK_ROWS = env.int("BATCH_CHUNK_ROWS", default=50_000)
BATCH_SUB_BATCH_ROWS = env.int("BATCH_SUB_BATCH_ROWS", default=1024)
# Validation runs in parallel parts of about this many bytes (cut at line starts), one task each.
BATCH_VALIDATION_PART_BYTES = env.int("BATCH_VALIDATION_PART_BYTES", default=16 * 1024 * 1024)
# A batch fails validation when more than this fraction of its lines is bad (and at least one line is).
BATCH_MAX_ERROR_RATE = env.float("BATCH_MAX_ERROR_RATE", default=0.1)
BATCH_MAX_REPORTED_ERRORS = env.int("BATCH_MAX_REPORTED_ERRORS", default=100)
# A chunk tried this many times (worker deaths included) is poison: its lines fail, the job goes on.
BATCH_CHUNK_MAX_ATTEMPTS = env.int("BATCH_CHUNK_MAX_ATTEMPTS", default=3)
BATCH_MIN_COMPLETION_WINDOW_SECONDS = env.int("BATCH_MIN_COMPLETION_WINDOW_SECONDS", default=60)
BATCH_MAX_COMPLETION_WINDOW_SECONDS = env.int("BATCH_MAX_COMPLETION_WINDOW_SECONDS", default=7 * 24 * 3600)
# Chunks still pending/running this long after their batch started are queued again by the sweep.
BATCH_STALE_CHUNK_SECONDS = env.int("BATCH_STALE_CHUNK_SECONDS", default=15 * 60)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=6)
WEBHOOK_BACKOFF_SECONDS = env.float("WEBHOOK_BACKOFF_SECONDS", default=10.0)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# Addresses or networks webhooks may reach although not public (tests: 127.0.0.1). Empty in production.
WEBHOOK_ALLOWED_NETWORKS = env.list("WEBHOOK_ALLOWED_NETWORKS", default=[])
CELERY_BEAT_SCHEDULE["batches-sweep"] = {"task": "batches.tasks.batches_sweep", "schedule": 30.0}
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # With acks_late, a message whose worker died is redelivered once it has been unacknowledged this
    # long: keep it above the longest chunk (chunk claims make an early redelivery harmless).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
        "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
        "unacked_restore_throttle": env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=10),
    }
# The queue producers send to and workers consume (tests give a worker its own to isolate it).
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
