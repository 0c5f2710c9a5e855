"""System checks for configuration that would otherwise fail at run time."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ValidationError
from django.db import DatabaseError


@register()
def check_key_cache(app_configs: Any, **kwargs: Any) -> list[Error]:
    if settings.API_KEY_CACHE_SECONDS > 1.0:
        return [
            Error(
                "API_KEY_CACHE_SECONDS must be at most 1.0: a revoked key must stop working within 1 s.",
                id="apiservice.E001",
            )
        ]
    return []


@register()
def check_nan_policy(app_configs: Any, **kwargs: Any) -> list[Error]:
    if settings.INFERENCE_NAN_POLICY not in ("reject", "allow"):
        return [Error("INFERENCE_NAN_POLICY must be 'reject' or 'allow'.", id="apiservice.E002")]
    return []


@register()
def check_concurrent_runs(app_configs: Any, **kwargs: Any) -> list[Error]:
    if settings.ORT_CONCURRENT_RUNS < 0:
        return [Error("ORT_CONCURRENT_RUNS must be 0 (one per CPU) or a positive number.", id="apiservice.E005")]
    return []


@register()
def check_upload_chunk(app_configs: Any, **kwargs: Any) -> list[Error]:
    size = settings.FILE_UPLOAD_CHUNK_BYTES
    if not 0 < size <= 2**31 - 4 or size % 4:
        return [
            Error("FILE_UPLOAD_CHUNK_BYTES must be a positive multiple of 4, at most 2**31 - 4.", id="apiservice.E003")
        ]
    return []


@register()
def check_idempotency_claim(app_configs: Any, **kwargs: Any) -> list[Error]:
    from billing.idempotency import CLAIM_SECONDS

    if settings.IDEMPOTENCY_CLAIM_SECONDS < 2 * CLAIM_SECONDS:
        return [
            Error(
                f"IDEMPOTENCY_CLAIM_SECONDS must be at least {2 * CLAIM_SECONDS}: a claim has to outlive the "
                f"{CLAIM_SECONDS} s after which an unanswered one is taken over as a crashed worker's.",
                id="apiservice.E004",
            )
        ]
    return []


@register()
def check_stripe_keys(app_configs: Any, **kwargs: Any) -> list[Warning]:
    if bool(settings.STRIPE_SECRET_KEY) != bool(settings.STRIPE_WEBHOOK_SECRET):
        return [
            Warning(
                "STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET go together: without the webhook secret every Stripe "
                "event is refused (customers pay in Checkout and keep their old plan); without the secret key "
                "no event can be handled.",
                id="apiservice.W003",
            )
        ]
    return []


@register(Tags.database)
def check_stored_rate_limits(app_configs: Any, databases: Any = None, **kwargs: Any) -> list[Warning]:
    """Rate limits saved before the admin validated them: the gateway parses them on every call (a 500).
    A database check: it runs when asked for the database (`migrate`, `check --database default`)."""
    from billing.models import KeyLimit, Plan, validate_rate_limit

    if not databases or "default" not in databases:
        return []
    try:
        rows = [(f"Plan '{code}'", value) for code, value in Plan.objects.values_list("code", "rate_limit")]
        rows += [
            (f"Key limit of key {prefix}", value)
            for prefix, value in KeyLimit.objects.exclude(rate_limit="").values_list("api_key__prefix", "rate_limit")
        ]
    except DatabaseError:  # not migrated yet: nothing stored to check
        return []
    warnings = []  # a warning, not an error: bad data must not block the deploy that may be needed
    for owner, value in rows:
        try:
            validate_rate_limit(value)
        except ValidationError:
            warnings.append(
                Warning(
                    f"{owner} has the rate limit {value!r}, which the gateway cannot read: every call it "
                    "covers fails. Correct it in the admin (e.g. 60/minute).",
                    id="apiservice.W004",
                )
            )
    return warnings


@register(Tags.database)
def check_default_plan(app_configs: Any, databases: Any = None, **kwargs: Any) -> list[Warning]:
    """BILLING_DEFAULT_PLAN must name a plan: it is the plan of every organisation without a billing account."""
    from billing import catalog
    from billing.models import Plan

    if not databases or "default" not in databases:
        return []
    code = settings.BILLING_DEFAULT_PLAN
    try:
        exists = Plan.objects.filter(code=code).exists()
    except DatabaseError:  # not migrated yet
        return []
    if exists or code in {plan[0] for plan in catalog.PLANS}:  # a seeded plan is put back when missing
        return []
    return [
        Warning(
            f"BILLING_DEFAULT_PLAN is {code!r}, but no plan has that code: every call of an organisation "
            "without a billing account fails. Set it to a plan's code (e.g. free).",
            id="apiservice.W005",
        )
    ]


@register(deploy=True)
def check_production_services(app_configs: Any, **kwargs: Any) -> list[Warning]:
    warnings = []
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        warnings.append(Warning("Production should set DATABASE_URL (PostgreSQL).", id="apiservice.W001"))
    if not settings.REDIS_URL:
        warnings.append(Warning("Production should set REDIS_URL (Redis).", id="apiservice.W002"))
    return warnings


@register(deploy=True)
def check_production_secret_key(app_configs: Any, **kwargs: Any) -> list[Warning]:
    if not settings.SECRET_KEY_FROM_VAR_DIR:
        return []
    return [
        Warning(
            "DJANGO_SECRET_KEY is not set: this host uses a key generated in its var/ folder, so sessions, "
            "password-reset links and webhook secrets encrypted at rest work on this host only, and are lost "
            "with that folder.",
            hint="Set DJANGO_SECRET_KEY (a long random string from your secret store) on every host.",
            id="apiservice.W006",
        )
    ]
