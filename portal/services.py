"""Writes behind the portal: sign-up, invitations, playground keys and the usage rollup."""

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Count, FloatField, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.text import slugify

from apiservice.models import APIKey, Membership, Organisation, Scope
from apiservice.services import api_key_create, membership_ensure
from billing.models import Meter, UsageRecord

from . import latency
from .models import Invitation, LatencyRollup, UsageRollup, UsageRollupCursor

logger = logging.getLogger(__name__)

INVITATION_DAYS = 7
PLAYGROUND_KEY_HOURS = 24
# Rows are rolled up only for days that ended at least this long ago, so in-flight calls land first.
ROLLUP_GRACE = timedelta(minutes=5)


class PortalError(Exception):
    """A refusal to show the user as a form error."""


# --- Sign-up and organisations --------------------------------------------------------------------


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "org"
    slug = base
    while Organisation.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def organisation_signup(
    *, organisation_name: str, username: str, email: str, password: str
) -> tuple[Any, Organisation]:
    """A new user who owns a new organisation. Then each `PORTAL_SIGNUP_HOOKS` runs (billing: free plan)."""
    with transaction.atomic():
        user = get_user_model().objects.create_user(username=username, email=email, password=password)
        organisation = organisation_create(name=organisation_name, owner=user)
    return user, organisation


def organisation_create(*, name: str, owner: Any) -> Organisation:
    """A new organisation that `owner` owns (at sign-up, or a signed-in user's, e.g. one removed from
    their only organisation). Then each `PORTAL_SIGNUP_HOOKS` runs (billing: free plan)."""
    with transaction.atomic():
        organisation = Organisation.objects.create(name=name, slug=_unique_slug(name))
        membership_ensure(user=owner, organisation=organisation, role=Membership.Role.OWNER)
        # HOOK(billing, issue 5): e.g. PORTAL_SIGNUP_HOOKS=["billing.services.plan_assign_free"]; each is
        # called as hook(organisation=...) inside the sign-up transaction.
        for path in settings.PORTAL_SIGNUP_HOOKS:
            import_string(path)(organisation=organisation)
    return organisation


# --- Invitations ----------------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class InvitationSent:
    invitation: Invitation
    token: str
    resent: bool  # an open invitation to the same address was renewed instead of a second one made


def invitation_create(
    *, organisation: Organisation, email: str, role: str, invited_by: Any, accept_url: str
) -> InvitationSent:
    """Invite an address and email the link. `accept_url` has a `{token}` placeholder.

    An address has at most one open (not accepted, not revoked) invitation per organisation: inviting it
    again renews that one (new link, role, inviter and expiry; the earlier link stops working) and
    sends it again.
    """
    email = email.strip().lower()
    if Membership.objects.filter(organisation=organisation, user__email__iexact=email).exists():
        raise PortalError(f"{email} is already a member of {organisation.name}.")
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    fields = {
        "role": role,
        "token_hash": _token_hash(token),
        "invited_by": invited_by,
        "created_at": now,  # shown as "Sent"
        "expires_at": now + timedelta(days=INVITATION_DAYS),
    }
    with transaction.atomic():
        Organisation.objects.select_for_update().only("pk").get(pk=organisation.pk)  # one invitation at a time
        invitation = (
            Invitation.objects.filter(
                organisation=organisation, email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True
            )
            .order_by("-created_at", "-id")
            .first()
        )
        resent = invitation is not None
        if invitation is None:
            invitation = Invitation.objects.create(organisation=organisation, email=email, **fields)
        else:
            for name, value in fields.items():
                setattr(invitation, name, value)
            invitation.save(update_fields=list(fields))
    _invitation_email(invitation=invitation, link=accept_url.format(token=token))
    return InvitationSent(invitation=invitation, token=token, resent=resent)


def _invitation_email(*, invitation: Invitation, link: str) -> None:
    inviter = invitation.invited_by
    name = getattr(inviter, "email", "") or getattr(inviter, "username", "") or "A teammate"
    organisation = " ".join(invitation.organisation.name.split())  # one line: a subject refuses line breaks
    send_mail(
        subject=f"Join {organisation} on ModelMeter",
        message=f"{name} invited you to {organisation} as {invitation.role}.\n\nAccept: {link}\n\n"
        f"The link works for {INVITATION_DAYS} days.",
        from_email=None,
        recipient_list=[invitation.email],
    )


def invitation_find(*, token: str) -> Invitation | None:
    """The pending invitation for a token, or None (unknown, used, revoked or expired)."""
    invitation = Invitation.objects.select_related("organisation").filter(token_hash=_token_hash(token)).first()
    if invitation is None or invitation.status != "pending":
        return None
    return invitation


def invitation_address_mismatch(*, invitation: Invitation, user: Any) -> bool:
    """True when the account is not the invited address's (it cannot accept)."""
    return str(getattr(user, "email", "") or "").lower() != invitation.email.lower()


def invitation_accept(*, invitation: Invitation, user: AbstractBaseUser) -> Membership:
    """Join the organisation. The signed-in account must have the invited address."""
    if invitation_address_mismatch(invitation=invitation, user=user):
        raise PortalError(f"This invitation is for {invitation.email}; log in with that address to accept it.")
    with transaction.atomic():
        claimed = Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True).update(
            accepted_at=timezone.now(), accepted_by=user
        )
        if not claimed:
            raise PortalError("This invitation has already been used.")
        return membership_ensure(user=user, organisation=invitation.organisation, role=invitation.role)


def invitation_signup(*, invitation: Invitation, username: str, password: str) -> Any:
    """A new account with the invited address that joins the organisation, or nothing at all.

    Refused when the address already has an account (sign-up refuses it too): its owner logs in and
    accepts instead, so an invitation never makes a second account for one address.
    """
    with transaction.atomic():
        if get_user_model().objects.filter(email__iexact=invitation.email).exists():
            raise PortalError(f"An account with {invitation.email} already exists: log in to accept the invitation.")
        user = get_user_model().objects.create_user(username=username, email=invitation.email, password=password)
        invitation_accept(invitation=invitation, user=user)
    return user


def invitation_revoke(*, invitation: Invitation) -> bool:
    """Stop the link working. False when it was already accepted (or revoked): nothing changes."""
    revoked = Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    return bool(revoked)


def membership_remove(*, membership: Membership) -> None:
    """Remove a member; an organisation always keeps at least one owner."""
    with transaction.atomic():
        # Lock the owners' rows by reading them: Django drops FOR UPDATE from a count(), and two owners
        # removing each other at once then both counted two and left the organisation with none.
        owners = Membership.objects.select_for_update().filter(
            organisation_id=membership.organisation_id, role=Membership.Role.OWNER
        )
        if membership.role == Membership.Role.OWNER and len(owners.values_list("pk", flat=True)) <= 1:
            raise PortalError("An organisation needs at least one owner.")
        membership.delete()


# --- API keys from the portal ---------------------------------------------------------------------


def playground_key_create(*, organisation: Organisation, user: Any) -> tuple[APIKey, str]:
    """A predict-only key that expires in a day, for the model playground (shown once, like every key)."""
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M")
    return api_key_create(
        organisation=organisation,
        name=f"Playground {stamp}",
        scopes=[Scope.PREDICT.value],
        expires_at=timezone.now() + timedelta(hours=PLAYGROUND_KEY_HOURS),
        created_by=user,
    )


# --- Usage rollup ---------------------------------------------------------------------------------


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())
    return start, start + timedelta(days=1)


def _ledger_rows(start: datetime, end: datetime, filters: dict[str, Any]) -> QuerySet[Any]:
    return UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end, **filters).annotate(
        day=TruncDate("created_at")
    )


def ledger_counts(*, start: datetime, end: datetime, **filters: Any) -> list[tuple[Any, ...]]:
    """(day, organisation, version, meter, calls, units, errors, latency sum) for ledger rows in [start, end)."""
    return list(
        _ledger_rows(start, end, filters)
        .values("day", "organisation_id", "model_version_id", "meter")
        .annotate(
            calls=Count("id"),
            units=Coalesce(Sum("units"), 0),
            errors=Count("id", filter=Q(status_code__gte=400)),
            latency_sum=Coalesce(Sum("latency_ms"), 0.0, output_field=FloatField()),
        )
        .order_by()
        .values_list("day", "organisation_id", "model_version_id", "meter", "calls", "units", "errors", "latency_sum")
    )


def ledger_histograms(
    *, start: datetime, end: datetime, by_organisation: bool = False, **filters: Any
) -> dict[tuple[Any, ...], dict[int, int]]:
    """Latency histograms of the online predictions in [start, end) per (day, version) or (day,
    organisation, version). Batch rows and bundle downloads are left out: the worker records a batch's
    rows, and a download before its bytes stream, at ~0 ms, which is no call's latency."""
    keys = ["day", "organisation_id", "model_version_id"] if by_organisation else ["day", "model_version_id"]
    rows = (
        _ledger_rows(start, end, filters)
        .filter(meter=Meter.ONLINE_PREDICTIONS)
        .annotate(bucket=latency.bucket_expression())
        .values(*keys, "bucket")
        .annotate(calls=Count("id"))
        .order_by()
        .values_list(*keys, "bucket", "calls")
    )
    hists: dict[tuple[Any, ...], dict[int, int]] = {}
    for *key, bucket, calls in rows:
        hist = hists.setdefault(tuple(key), {})
        hist[int(bucket)] = hist.get(int(bucket), 0) + calls
    return hists


def usage_rollup_day(*, day: date) -> int:
    """Recompute one day of both rollups from the ledger (idempotent). Returns the usage rows written."""
    start, end = _day_bounds(day)
    counts = ledger_counts(start=start, end=end)
    by_org = ledger_histograms(start=start, end=end, by_organisation=True)
    rows = []
    for _, organisation_id, version_id, meter, calls, units, errors, latency_sum in counts:
        rows.append(
            UsageRollup(
                day=day,
                organisation_id=organisation_id,
                model_version_id=version_id,
                meter=meter,
                calls=calls,
                units=units,
                errors=errors,
                latency_sum_ms=latency_sum,
            )
        )
    # Histograms are per (organisation, version); the first meter row of the pair carries it.
    for row in rows:
        hist = by_org.pop((day, row.organisation_id, row.model_version_id), None)
        row.latency_hist = {str(b): c for b, c in (hist or {}).items()}
    per_version = ledger_histograms(start=start, end=end)
    latency_rows = [
        LatencyRollup(
            day=day,
            model_version_id=key[1],
            calls=sum(hist.values()),
            latency_hist={str(b): c for b, c in hist.items()},
        )
        for key, hist in per_version.items()
    ]
    with transaction.atomic():
        UsageRollup.objects.filter(day=day).delete()
        LatencyRollup.objects.filter(day=day).delete()
        UsageRollup.objects.bulk_create(rows, batch_size=2000)
        LatencyRollup.objects.bulk_create(latency_rows, batch_size=2000)
    return len(rows)


def usage_rollup_refresh(*, now: datetime | None = None, since: date | None = None) -> int:
    """Roll up every closed day not yet rolled up (and the last one again, for late rows).

    Days before the cursor are served from the rollup, later ones live from the ledger, so the
    dashboards are always complete. Concurrent runs serialise on the cursor row. Returns days rolled.
    """
    now = now or timezone.now()
    closed_until = timezone.localdate(now - ROLLUP_GRACE)  # this day is still open
    with transaction.atomic():
        cursor = UsageRollupCursor.objects.select_for_update().filter(pk=1).first()
        first = since or (cursor.rolled_through - timedelta(days=1) if cursor else _first_ledger_day())
        if first is None:
            return 0
        day, done = first, 0
        while day < closed_until:
            usage_rollup_day(day=day)
            day, done = day + timedelta(days=1), done + 1
        if cursor is None:
            UsageRollupCursor.objects.create(pk=1, rolled_through=max(closed_until, first), updated_at=now)
        elif since is None or closed_until > cursor.rolled_through:
            cursor.rolled_through = max(closed_until, cursor.rolled_through)
            cursor.updated_at = now
            cursor.save(update_fields=["rolled_through", "updated_at"])
    logger.info("usage rollup: %s days from %s", done, first)
    return done


def _first_ledger_day() -> date | None:
    first = UsageRecord.objects.order_by("created_at").values_list("created_at", flat=True).first()
    return timezone.localdate(first) if first else None
