"""/portal/ (customers, session login) and /staff/ (is_staff only)."""

from django.contrib.auth import views as auth_views
from django.urls import include, path, reverse_lazy

import apiservice.converters  # noqa: F401  (registers <pid:...>)

from .views import batches, billing, bundles, common, customer, staff

AUTH = "portal/auth/"

portal_patterns = [
    path("", customer.home, name="home"),
    path("signup/", customer.signup, name="signup"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name=AUTH + "login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page=reverse_lazy("portal:login")), name="logout"),
    path(
        "password-reset/",
        auth_views.PasswordResetView.as_view(
            template_name=AUTH + "password_reset_form.html",
            email_template_name=AUTH + "password_reset_email.txt",
            subject_template_name=AUTH + "password_reset_subject.txt",
            success_url=reverse_lazy("portal:password_reset_done"),
        ),
        name="password_reset",
    ),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(template_name=AUTH + "password_reset_done.html"),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            template_name=AUTH + "password_reset_confirm.html",
            success_url=reverse_lazy("portal:password_reset_complete"),
        ),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done/",
        auth_views.PasswordResetCompleteView.as_view(template_name=AUTH + "password_reset_complete.html"),
        name="password_reset_complete",
    ),
    path("organisation/new/", customer.organisation_create, name="organisation-create"),
    path("organisation/switch/", customer.organisation_switch, name="organisation-switch"),
    path("team/", customer.team, name="team"),
    path("team/invitations/<int:invitation_id>/revoke/", customer.invitation_revoke, name="invitation-revoke"),
    path("team/members/<int:membership_id>/remove/", customer.member_remove, name="member-remove"),
    path("invitations/<pid:token>/", customer.invitation_accept, name="invitation-accept"),
    path("keys/", customer.keys, name="keys"),
    path("keys/<pid:prefix>/revoke/", customer.key_revoke, name="key-revoke"),
    path("usage/", customer.usage, name="usage"),
    path("usage/calls/", customer.usage_calls, name="usage-calls"),
    path("usage/export.csv", customer.usage_csv, name="usage-csv"),
    path("models/", customer.models, name="models"),
    path("models/<pid:name>/", customer.model_detail, name="model"),
    path("playground/key/", customer.playground_key, name="playground-key"),
    # Batch jobs, edge bundles and billing: their main pages are the un-namespaced "portal-batches",
    # "portal-bundles" and "portal-billing" below (see context_processors); the rest lives here.
    path("batches/<pid:uid>/row/", batches.batch_row, name="batch-row"),
    path("batches/<pid:uid>/cancel/", batches.batch_cancel, name="batch-cancel"),
    path("files/<pid:uid>/download/", batches.batch_file, name="file-download"),
    path("bundles/<pid:public_id>/row/", bundles.bundle_row, name="bundle-row"),
    path("bundles/<pid:public_id>/download/", bundles.bundle_download, name="bundle-download"),
    path("billing/checkout/", billing.billing_checkout, name="billing-checkout"),
    path("billing/manage/", billing.billing_manage, name="billing-manage"),
]

staff_patterns = [
    path("", staff.usage, name="usage"),
    path("usage/export.csv", staff.usage_csv, name="usage-csv"),
    path("models/", staff.models, name="models"),
    path("models/upload/", staff.version_upload, name="version-upload"),
    path("models/<pid:name>/", staff.model_detail, name="model"),
    path("models/<pid:name>/versions/<int:number>/", staff.version_report, name="version"),
    path("models/<pid:name>/aliases/move/", staff.alias_move_view, name="alias-move"),
    path("bundles/<pid:public_id>/rebuild/", bundles.staff_bundle_rebuild, name="bundle-rebuild"),
]

urlpatterns = [
    path("favicon.ico", common.favicon, name="favicon"),  # the admin's pages ask for it (a 404 per page)
    # The plug-in pages' un-namespaced names light up their navigation entries (context_processors).
    path("portal/batches/", batches.batches, name="portal-batches"),
    path("portal/bundles/", bundles.bundles, name="portal-bundles"),
    path("portal/billing/", billing.billing, name="portal-billing"),
    path("staff/bundles/", bundles.staff_bundles, name="staff-bundles"),
    path("staff/billing/", billing.billing_health, name="staff-billing-health"),
    path("portal/", include((portal_patterns, "portal"))),
    path("staff/", include((staff_patterns, "staff"))),
]
