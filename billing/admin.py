from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from apiservice.admin import TextPrimaryKeyAdmin

from . import outbox
from .models import (
    BillingAccount,
    BillingMeter,
    KeyLimit,
    Plan,
    PlanPrice,
    ReconciliationIssue,
    StripeEvent,
    UsageRecord,
    UsageReport,
)


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """The ledger is append-only: staff read it, nobody edits it here."""

    list_display = ["created_at", "organisation", "face", "model_version", "units", "status_code", "latency_ms"]
    list_filter = ["face", "status_code", "meter"]
    list_select_related = ["organisation", "model_version__model"]
    search_fields = ["=request_id", "=client_request_id", "organisation__name"]  # exact ids: the unique index
    date_hierarchy = "created_at"

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False


class PlanPriceFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        """Stripe bills a self-serve plan's prices from the first unit: included units there would read as
        free in the estimate and be invoiced all the same."""
        super().clean()
        if not self.instance.self_serve:
            return
        for form in self.forms:
            data = getattr(form, "cleaned_data", None) or {}
            if data.get("included_units") and not data.get("DELETE"):
                raise ValidationError(
                    "A self-serve plan cannot include units: Stripe bills its prices from the first unit, so "
                    "included units would show as free in the estimate and still be invoiced. Leave them "
                    "empty, or make the plan not self-serve."
                )


class PlanPriceInline(admin.TabularInline):
    model = PlanPrice
    formset = PlanPriceFormSet
    extra = 0
    readonly_fields = ["stripe_price_id"]


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    """Staff edit prices and limits here; run `manage.py sync_stripe_catalog` afterwards."""

    list_display = ["code", "name", "rate_limit", "hard_cap", "self_serve", "currency", "stripe_product_id"]
    search_fields = ["code", "name"]
    readonly_fields = ["stripe_product_id"]
    inlines = [PlanPriceInline]


@admin.register(BillingMeter)
class BillingMeterAdmin(admin.ModelAdmin):
    list_display = ["meter", "event_name", "stripe_meter_id"]
    readonly_fields = ["stripe_meter_id"]


class BillingAccountForm(forms.ModelForm):
    class Meta:
        model = BillingAccount
        fields = ["organisation", "plan", "status", "past_due_since", "metered_since"]

    def clean_plan(self) -> Plan:
        """A subscribed organisation's plan follows its Stripe subscription's prices (every subscription
        event sets it again): a change made here alone would silently revert."""
        plan: Plan = self.cleaned_data["plan"]
        if self.instance.pk and self.instance.is_subscribed and plan.pk != self.instance.plan_id:
            raise ValidationError(
                f"This organisation is billed by Stripe subscription {self.instance.stripe_subscription_id}: "
                f"change that subscription's prices in Stripe to the plan's (lookup keys mm_{plan.code}_<meter>, "
                "after sync_stripe_catalog) and the webhook sets the plan here."
            )
        return plan


@admin.register(BillingAccount)
class BillingAccountAdmin(admin.ModelAdmin):
    """Plan changes for custom (enterprise) deals; Stripe-derived fields are read-only."""

    form = BillingAccountForm

    list_display = ["organisation", "plan", "status", "subscription_status", "past_due_since", "stripe_customer_id"]
    list_filter = ["status", "plan"]
    list_select_related = ["organisation", "plan"]
    search_fields = ["organisation__name", "organisation__slug", "stripe_customer_id", "stripe_subscription_id"]
    readonly_fields = [
        "stripe_customer_id",
        "stripe_subscription_id",
        "subscription_status",
        "current_period_start",
        "current_period_end",
    ]


@admin.register(KeyLimit)
class KeyLimitAdmin(admin.ModelAdmin):
    list_display = ["api_key", "rate_limit", "monthly_budget_units"]
    list_select_related = ["api_key"]
    search_fields = ["api_key__prefix", "api_key__name"]


@admin.register(UsageReport)
class UsageReportAdmin(TextPrimaryKeyAdmin):
    """The outbox. Reports that are failed or out of Stripe's window need a member of staff."""

    list_display = ["id", "organisation", "meter", "units", "rows", "event_timestamp", "status", "attempts"]
    list_filter = ["status", "meter"]
    list_select_related = ["organisation"]
    search_fields = ["id", "stripe_customer_id", "organisation__name"]
    readonly_fields = [f.name for f in UsageReport._meta.fields]
    actions = ["send_again"]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False

    @admin.action(description="Send selected failed reports again", permissions=["change"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[UsageReport]) -> None:
        selected = list(queryset.values_list("pk", flat=True))
        queued = outbox.usage_reports_retry(report_ids=selected)
        messages.success(
            request,
            f"{queued} report(s) will be sent again with the next push; {len(selected) - queued} left alone "
            "(only failed reports still inside Stripe's 35-day window can be, and none that Stripe may have "
            "counted more than 24 h ago: see its last error).",
        )


@admin.register(ReconciliationIssue)
class ReconciliationIssueAdmin(admin.ModelAdmin):
    list_display = ["day", "organisation", "meter", "ours", "stripe", "resolved"]
    list_filter = ["resolved", "meter"]
    list_select_related = ["organisation"]
    readonly_fields = ["organisation", "meter", "day", "ours", "stripe", "created_at"]

    def has_add_permission(self, request: object) -> bool:
        return False  # reconciliation finds them; staff only mark them resolved


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    list_display = ["event_id", "type", "received_at", "outcome"]
    list_filter = ["type", "outcome"]
    search_fields = ["event_id"]
    readonly_fields = [f.name for f in StripeEvent._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False
