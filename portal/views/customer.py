"""The customer portal: sign-up, team, API keys, usage, models and the playground."""

from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Prefetch
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apiservice.errors import NotFound
from apiservice.models import APIKey, Membership
from apiservice.services import api_key_create, api_key_revoke
from models_registry import selectors as registry
from models_registry.models import ModelAlias, ModelVersion

from .. import billing_link, selectors, services
from ..access import SESSION_ORG, login_redirect, membership_named, portal_view
from ..forms import (
    APIKeyCreateForm,
    InvitationSignupForm,
    InviteForm,
    OrganisationCreateForm,
    SignupForm,
    UsageFilterForm,
)
from ..models import Invitation
from ..playground import example_body
from .billing import billing_summary
from .common import csv_response, invalid_filter_response


def _is_owner(request: HttpRequest) -> bool:
    return bool(request.membership.role == Membership.Role.OWNER)  # type: ignore[attr-defined]


# --- Sign-up and organisations --------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("portal:home")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        user, organisation = services.organisation_signup(
            organisation_name=data["organisation_name"],
            username=data["username"],
            email=data["email"],
            password=data["password1"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        request.session[SESSION_ORG] = organisation.pk
        messages.success(request, f"Welcome! {organisation.name} is ready. Create an API key to start.")
        return redirect("portal:keys")
    return render(request, "portal/signup.html", {"form": form})


@require_GET
@portal_view()
def home(request: HttpRequest) -> HttpResponse:
    organisation = request.membership.organisation  # type: ignore[attr-defined]
    today = timezone.localdate()
    flt = selectors.UsageFilter(start=today.replace(day=1), end=today, organisation_id=organisation.pk)
    facts = selectors.usage_facts(flt=flt).facts
    context = {
        "active_keys": selectors.api_key_active_count(organisation=organisation),
        "month_calls": sum(f.calls for f in facts),
        "month_units": sum(f.units for f in facts),
        "models": selectors.model_catalogue(organisation_id=organisation.pk).count(),
        "memberships": selectors.membership_list(user=request.user),
        "billing": billing_summary(organisation_id=organisation.pk),
    }
    return render(request, "portal/home.html", context)


@require_http_methods(["GET", "POST"])
def organisation_create(request: HttpRequest) -> HttpResponseBase:
    """A signed-in user starts an organisation of their own (sign-up does it for new accounts)."""
    if not request.user.is_authenticated:
        return login_redirect(request)
    form = OrganisationCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        organisation = services.organisation_create(name=form.cleaned_data["organisation_name"], owner=request.user)
        request.session[SESSION_ORG] = organisation.pk
        messages.success(request, f"{organisation.name} is ready. Create an API key to start.")
        return redirect("portal:keys")
    return render(request, "portal/organisation_new.html", {"form": form})


@require_POST
@portal_view()
def organisation_switch(request: HttpRequest) -> HttpResponse:
    membership = membership_named(
        user_id=int(request.user.pk or 0), organisation_id=request.POST.get("organisation", "")
    )
    if membership is None:  # a forged or empty choice, or one not theirs: no such membership, not a 500
        raise Http404("No such organisation.")
    request.session[SESSION_ORG] = membership.organisation_id
    return redirect("portal:home")


# --- Team -----------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@portal_view()
def team(request: HttpRequest) -> HttpResponse:
    organisation = request.membership.organisation  # type: ignore[attr-defined]
    form = InviteForm(request.POST or None)
    if request.method == "POST":
        if not _is_owner(request):
            raise PermissionDenied("Only owners can invite teammates.")
        if form.is_valid():
            accept_url = request.build_absolute_uri(reverse("portal:invitation-accept", args=["TOKEN"]))
            try:
                sent = services.invitation_create(
                    organisation=organisation,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    invited_by=request.user,
                    accept_url=accept_url.replace("TOKEN", "{token}"),
                )
            except services.PortalError as exc:
                form.add_error("email", str(exc))
            else:
                email = sent.invitation.email
                if sent.resent:
                    messages.success(request, f"Invitation sent again to {email}; the earlier link no longer works.")
                else:
                    messages.success(request, f"Invitation sent to {email}.")
                return redirect("portal:team")
    context = {
        "form": form,
        "members": selectors.member_list(organisation=organisation),
        "invitations": selectors.invitation_list(organisation=organisation),
        "is_owner": _is_owner(request),
    }
    return render(request, "portal/team.html", context)


@require_POST
@portal_view(owner=True)
def invitation_revoke(request: HttpRequest, invitation_id: int) -> HttpResponse:
    organisation = request.membership.organisation  # type: ignore[attr-defined]
    invitation = get_object_or_404(organisation.invitations, pk=invitation_id)
    if services.invitation_revoke(invitation=invitation):
        messages.success(request, f"Invitation to {invitation.email} revoked.")
        return redirect("portal:team")
    invitation.refresh_from_db()
    if invitation.accepted_at:  # accepted since the page was shown: they are in, whatever the page said
        messages.error(request, f"{invitation.email} already accepted the invitation: they are a member now.")
    else:
        messages.info(request, f"The invitation to {invitation.email} was already revoked.")
    return redirect("portal:team")


@require_POST
@portal_view(owner=True)
def member_remove(request: HttpRequest, membership_id: int) -> HttpResponse:
    organisation = request.membership.organisation  # type: ignore[attr-defined]
    membership = get_object_or_404(
        Membership.objects.select_related("user"), organisation=organisation, pk=membership_id
    )
    try:
        services.membership_remove(membership=membership)
    except services.PortalError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{membership.user.get_username()} removed.")
    return redirect("portal:team")


@require_http_methods(["GET", "POST"])
def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    invitation = services.invitation_find(token=token)
    if invitation is None:
        raise Http404("This invitation link is unknown, used, revoked or expired.")
    if request.user.is_authenticated:
        return _invitation_accept_signed_in(request, invitation)
    form = InvitationSignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.invitation_signup(
                invitation=invitation, username=form.cleaned_data["username"], password=form.cleaned_data["password1"]
            )
        except services.PortalError as exc:
            form.add_error(None, str(exc))
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return _joined(request, invitation)
    return render(request, "portal/invitation.html", {"invitation": invitation, "form": form})


def _invitation_accept_signed_in(request: HttpRequest, invitation: Invitation) -> HttpResponse:
    if request.method != "POST":
        other_account = services.invitation_address_mismatch(invitation=invitation, user=request.user)
        context = {"invitation": invitation, "form": None, "other_account": other_account}
        return render(request, "portal/invitation.html", context)
    try:
        services.invitation_accept(invitation=invitation, user=request.user)  # type: ignore[arg-type]  # signed in
    except services.PortalError as exc:
        messages.error(request, str(exc))
        return redirect("portal:home")
    return _joined(request, invitation)


def _joined(request: HttpRequest, invitation: Invitation) -> HttpResponse:
    request.session[SESSION_ORG] = invitation.organisation_id
    messages.success(request, f"You joined {invitation.organisation.name}.")
    return redirect("portal:home")


# --- API keys -------------------------------------------------------------------------------------


def _with_budgets(keys: list[APIKey]) -> list[APIKey]:
    """Each key with its monthly budget (`key.budget`, None without one), as its row shows it."""
    budgets = billing_link.api_key_budgets(api_key_ids=[k.pk for k in keys]) if billing_link.budgets_supported() else {}
    for key in keys:
        key.budget = budgets.get(str(key.pk))  # type: ignore[attr-defined]
    return keys


def _keys_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    organisation = request.membership.organisation  # type: ignore[attr-defined]
    keys = _with_budgets(list(selectors.api_key_list(organisation=organisation)))
    return {"keys": keys, "is_owner": _is_owner(request), "budgets": billing_link.budgets_supported(), **extra}


@require_http_methods(["GET", "POST"])
@portal_view()
def keys(request: HttpRequest) -> HttpResponse:
    """List and create. The new key's secret is rendered once in the response, never stored or redirected."""
    form = APIKeyCreateForm(request.POST or None)
    context = _keys_context(request, form=form)
    if request.method == "POST" and form.is_valid():
        budget = form.cleaned_data.get("monthly_budget_units")
        with transaction.atomic():
            api_key, secret = api_key_create(
                organisation=request.membership.organisation,  # type: ignore[attr-defined]
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                expires_at=form.expires_at(),
                created_by=request.user,
            )
            if budget:
                billing_link.api_key_budget_set(api_key=api_key, monthly_budget_units=budget)
        context = _keys_context(request, form=APIKeyCreateForm(), created=api_key, secret=secret)
    template = "portal/partials/keys_panel.html" if request.htmx else "portal/keys.html"  # type: ignore[attr-defined]
    response = render(request, template, context)
    response["Cache-Control"] = "no-store"  # the page may hold a secret
    return response


@require_POST
@portal_view()
def key_revoke(request: HttpRequest, prefix: str) -> HttpResponse:
    """By the key's prefix: its primary key is "<prefix>.<hash of the secret>", which pages never show."""
    organisation = request.membership.organisation  # type: ignore[attr-defined]
    api_key = get_object_or_404(APIKey, organisation=organisation, prefix=prefix)
    if not _is_owner(request) and api_key.created_by_id != request.user.pk:
        raise PermissionDenied("Members can revoke only the keys they created.")
    api_key_revoke(api_key=api_key)
    if request.htmx:  # type: ignore[attr-defined]
        row = {"key": _with_budgets([api_key])[0], "is_owner": _is_owner(request)}
        return render(request, "portal/partials/key_row.html", row)
    messages.success(request, f"Key {api_key.prefix} revoked.")
    return redirect("portal:keys")


# --- Usage ----------------------------------------------------------------------------------------


def _usage_filter(request: HttpRequest) -> tuple[UsageFilterForm, selectors.UsageFilter]:
    organisation = request.membership.organisation  # type: ignore[attr-defined]
    form = UsageFilterForm(
        request.GET or None,
        models=registry.model_list(organisation_id=organisation.pk),
        keys=selectors.api_key_list(organisation=organisation),
    )
    start, end = form.range()
    valid = form.is_bound and form.is_valid()
    model = form.cleaned_data.get("model") if valid else None
    key = form.cleaned_data.get("key") if valid else None
    flt = selectors.UsageFilter(
        start=start,
        end=end,
        organisation_id=organisation.pk,
        model_id=getattr(model, "pk", None),
        api_key_id=getattr(key, "pk", None),
    )
    return form, flt


@require_GET
@portal_view()
def usage(request: HttpRequest) -> HttpResponse:
    form, flt = _usage_filter(request)
    dashboard = selectors.usage_dashboard(flt=flt)
    calls = selectors.latest_calls(flt=flt)
    estimate = billing_summary(organisation_id=flt.organisation_id or 0)["estimate"]
    context = {"form": form, "flt": flt, "d": dashboard, "calls": calls, "estimate": estimate}
    return render(request, "portal/usage.html", context)


@require_GET
@portal_view()
def usage_calls(request: HttpRequest) -> HttpResponse:
    _, flt = _usage_filter(request)  # the page's filter (an invalid one: the last 30 days, as the page)
    calls = selectors.latest_calls(flt=flt)
    return render(request, "portal/partials/calls_table.html", {"calls": calls})


@require_GET
@portal_view()
def usage_csv(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    form, flt = _usage_filter(request)
    if form.is_bound and not form.is_valid():
        return invalid_filter_response(form)
    return csv_response(selectors.usage_call_rows(flt=flt), f"usage-{flt.start}-{flt.end}.csv")


# --- Models and playground ------------------------------------------------------------------------


@require_GET
@portal_view()
def models(request: HttpRequest) -> HttpResponse:
    organisation = request.membership.organisation  # type: ignore[attr-defined]
    catalogue = (
        selectors.model_catalogue(organisation_id=organisation.pk)
        .annotate(version_count=Count("versions"))
        .prefetch_related(Prefetch("aliases", queryset=ModelAlias.objects.select_related("version")))
    )
    return render(request, "portal/models.html", {"models": catalogue})


@require_GET
@portal_view()
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    organisation = request.membership.organisation  # type: ignore[attr-defined]
    try:
        model = selectors.model_catalogue_get(organisation_id=organisation.pk, name=name)
    except NotFound:  # hidden from the catalogue: no ready version, or another organisation's
        raise Http404(f"Model '{name}' not found.") from None
    versions = model.versions.prefetch_related("aliases").order_by("-number")
    ready = [v for v in versions if v.status == ModelVersion.Status.READY]
    try:
        default = registry.model_version_resolve(model=model, ref=None)
    except NotFound:
        default = None
    context = {
        "model": model,
        "versions": versions,
        "ready": ready,
        "default": default,
        "examples": {v.number: example_body(v.signature) for v in ready},
        "api_base": request.build_absolute_uri("/").rstrip("/"),
    }
    return render(request, "portal/model_detail.html", context)


@require_POST
@portal_view()
def playground_key(request: HttpRequest) -> HttpResponse:
    organisation = request.membership.organisation  # type: ignore[attr-defined]
    api_key, secret = services.playground_key_create(organisation=organisation, user=request.user)
    response = render(request, "portal/partials/playground_key.html", {"created": api_key, "secret": secret})
    response["Cache-Control"] = "no-store"
    return response
