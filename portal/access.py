"""Who may see what: the current organisation of a portal session, roles, and staff-only pages.

Every portal view goes through `portal_view`, which resolves the membership from the session; every
object is then fetched through the membership's organisation, so another organisation's object is a
404, never a 403 that would confirm it exists.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotFound
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django_htmx.http import HttpResponseClientRedirect

from apiservice.auth import Principal
from apiservice.models import Membership

SESSION_ORG = "portal_organisation_id"
# The organisation a page was showing, sent back by its forms (a hidden field) and htmx requests (a
# header set on <body>): the session's organisation may have been switched in another tab since.
ORG_FIELD = "portal_organisation"
ORG_HEADER = "X-Portal-Organisation"
View = TypeVar("View", bound=Callable[..., HttpResponseBase])


def current_membership(request: HttpRequest) -> Membership | None:
    memberships = Membership.objects.filter(user_id=int(request.user.pk or 0)).select_related("organisation")
    wanted = request.session.get(SESSION_ORG)
    membership = memberships.filter(organisation_id=wanted).first() if wanted else None
    return membership or memberships.order_by("created_at", "id").first()


def membership_named(*, user_id: int, organisation_id: str) -> Membership | None:
    """The user's membership of the organisation that a form field or header names by id, if any.

    Matched as text against the user's own few memberships: the value is the client's, and `int()`
    refuses some of what `str.isdigit()` accepts ("²", 5,000 digits), which was a 500.
    """
    mine = Membership.objects.filter(user_id=user_id).select_related("organisation")
    return next((m for m in mine if str(m.organisation_id) == organisation_id), None)


def login_redirect(request: HttpRequest) -> HttpResponseBase:
    """To the login page, then back. An htmx partial (a polled row, *Refresh*) redirects the whole page
    back to the page it is on: a plain redirect would swap the login page into the table. A form posted
    after the session ended comes back to the page it was on (the action is not replayed): the login
    page opens `next` with a GET, which a POST-only action (*Download*, *Remove*) answers with a 405."""
    htmx = getattr(request, "htmx", None)
    if htmx:
        return HttpResponseClientRedirect(redirect_to_login(htmx.current_url_abs_path or "/portal/").url)
    if request.method not in ("GET", "HEAD"):
        return redirect_to_login(_referring_page(request) or "/portal/")
    return redirect_to_login(request.get_full_path())


def _referring_page(request: HttpRequest) -> str | None:
    """The path and query of the page of this site that sent the request (its Referer), if any."""
    referer = urlsplit(request.headers.get("Referer", ""))
    if referer.scheme != request.scheme or referer.netloc != request.get_host():
        return None
    return referer.path + (f"?{referer.query}" if referer.query else "")


def stale_row_response(request: HttpRequest) -> HttpResponseNotFound:
    """A polled row that is not the current organisation's (switched in another tab, say): still a 404,
    and htmx reloads the page (`HX-Refresh`) instead of polling a 404 every second forever."""
    if not getattr(request, "htmx", None):
        raise Http404("No such object in this organisation.")
    return HttpResponseNotFound(headers={"HX-Refresh": "true"})


def stale_organisation_response(request: HttpRequest, membership: Membership) -> HttpResponse | None:
    """A 409 for a POST from a page of another organisation than the session's current one (switched in
    another tab since the page was shown), which would otherwise act on the current one unseen. An htmx
    GET from such a page (*Refresh*, a polled row) would swap the current one's data into it: the page
    reloads instead (`HX-Refresh`), and then names the organisation it shows. A link whose answer names
    no organisation (*Export calls (CSV)*) says which in its query string, and is refused the same way."""
    shown = request.headers.get(ORG_HEADER) or request.POST.get(ORG_FIELD) or request.GET.get(ORG_FIELD)
    if not shown or shown == str(membership.organisation_id):
        return None
    if request.method != "POST" and getattr(request, "htmx", None):
        return HttpResponse(status=409, headers={"HX-Refresh": "true"})
    then = membership_named(user_id=membership.user_id, organisation_id=shown)
    context = {"shown": then.organisation if then else None}
    if getattr(request, "htmx", None):
        message = render(request, "portal/partials/stale_organisation.txt", context).content
        return HttpResponse(message, status=409, content_type="text/plain; charset=utf-8")
    return render(request, "portal/stale_organisation.html", context, status=409)


def portal_view(*, owner: bool = False) -> Callable[[View], View]:
    """Login required; `request.membership` set (no organisation yet: 403); `owner=True` for owners only."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return login_redirect(request)
            membership = current_membership(request)
            if membership is None and request.user.is_staff:
                return redirect("staff:usage")  # staff without an organisation work in /staff/
            if membership is None:  # e.g. removed from their only one: they may start their own
                response = render(request, "portal/no_organisation.html", status=403)
                if getattr(request, "htmx", None):  # a polled row would poll this 403 every second, unseen
                    response["HX-Refresh"] = "true"
                return response
            request.membership = membership  # type: ignore[attr-defined]
            stale = stale_organisation_response(request, membership)
            if stale is not None:
                return stale
            if owner and membership.role != Membership.Role.OWNER:
                raise PermissionDenied("Only owners of this organisation can do that.")
            return view(request, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def staff_view(view: View) -> View:
    """Staff only: anonymous users go to the login page, signed-in non-staff get 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return login_redirect(request)
        if not request.user.is_staff:
            raise PermissionDenied("Staff only.")
        return view(request, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def session_principal(request: HttpRequest, *, scopes: frozenset[str]) -> Principal:
    """The caller of an API service from a portal page: the session's organisation, no API key.

    Services that record a key (batches, bundle downloads) store none for these (their key is NULL).
    """
    membership: Membership = request.membership  # type: ignore[attr-defined]
    return Principal(
        api_key_id=cast(str, None),
        prefix="portal",
        organisation_id=membership.organisation_id,
        scopes=scopes,
        expires_at=None,
    )
