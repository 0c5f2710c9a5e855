"""Usage, costs, invoices and Stripe flows, as the organisation's own API keys see them; the Stripe webhook."""

import csv
import io
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apiservice.auth import request_principal
from apiservice.renderers import JSONRenderer, dumps
from apiservice.schema import ERROR_RESPONSES, READ_ERROR_RESPONSES, ErrorEnvelope

from . import payments, selectors


def _organisation_id(request: Request) -> int:
    principal = request_principal(request)
    assert principal is not None  # HasAPIKey guarantees it
    return principal.organisation_id


class PeriodSerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)

    def validate(self, attrs: dict) -> dict:
        end = attrs.get("end") or timezone.now()
        try:
            start = attrs.get("start") or end - timedelta(days=30)
        except OverflowError:  # an `end` within 30 days of year 1
            raise serializers.ValidationError({"end": "end is too early; give a start as well."}) from None
        if start >= end:
            raise serializers.ValidationError({"start": "start must be before end."})
        if end - start > timedelta(days=366):
            raise serializers.ValidationError({"start": "At most 366 days per query."})
        return {**attrs, "start": start, "end": end}


class UsageView(APIView):
    required_scope = "usage"

    class InputSerializer(PeriodSerializer):
        group_by = serializers.ChoiceField(choices=selectors.GROUPINGS, default="day")

    @extend_schema(
        operation_id="usage_summary",
        parameters=[InputSerializer],
        responses={
            200: inline_serializer(
                "UsageSummary",
                fields={
                    "start": serializers.DateTimeField(),
                    "end": serializers.DateTimeField(),
                    "group_by": serializers.CharField(),
                    "plan": serializers.CharField(),
                    "totals": serializers.DictField(),
                    "buckets": serializers.ListField(child=serializers.DictField()),
                    "estimate": serializers.DictField(),
                },
            ),
            **READ_ERROR_RESPONSES,
        },
        tags=["usage"],
    )
    def get(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        summary = selectors.usage_summary(organisation_id=_organisation_id(request), **data.validated_data)
        return Response(summary)


def _csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=selectors.EXPORT_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _jsonl_lines(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for row in rows:
        yield dumps(row) + b"\n"


class UsageExportView(APIView):
    required_scope = "usage"

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[Any, str]:
        # `format` here picks the stream's format, not a DRF renderer; errors stay the JSON envelope.
        return JSONRenderer(), JSONRenderer.media_type

    class InputSerializer(PeriodSerializer):
        format = serializers.ChoiceField(choices=["csv", "jsonl"], default="csv")

    @extend_schema(
        operation_id="usage_export",
        parameters=[InputSerializer],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="One ledger row per line."),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="One JSON row per line."),
            **READ_ERROR_RESPONSES,
        },
        tags=["usage"],
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        period = data.validated_data
        rows = selectors.usage_export_rows(
            organisation_id=_organisation_id(request), start=period["start"], end=period["end"]
        )
        stamp = f"{period['start']:%Y%m%d}-{period['end']:%Y%m%d}"
        if period["format"] == "jsonl":
            response = StreamingHttpResponse(_jsonl_lines(rows), content_type="application/x-ndjson")
        else:
            response = StreamingHttpResponse(_csv_lines(rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="usage-{stamp}.{period["format"]}"'
        return response


def _portal_billing_url() -> str:
    """Where Stripe sends a customer back when the caller gave no URL: the portal's billing page."""
    return settings.BILLING_PUBLIC_URL.rstrip("/") + reverse("portal-billing")


class CheckoutInputSerializer(serializers.Serializer):
    plan = serializers.CharField(default="payg")
    success_url = serializers.URLField(required=False)
    cancel_url = serializers.URLField(required=False)


class CheckoutSessionSerializer(serializers.Serializer):
    id = serializers.CharField()
    url = serializers.URLField()


# What starting a Stripe session (Checkout or the customer portal) can answer besides 201.
STRIPE_SESSION_ERRORS = {
    **{k: v for k, v in ERROR_RESPONSES.items() if k in (400, 401, 403, 409, 429)},
    502: OpenApiResponse(ErrorEnvelope, description="Stripe did not answer."),
}


class CheckoutView(APIView):
    required_scope = "usage"
    InputSerializer = CheckoutInputSerializer
    OutputSerializer = CheckoutSessionSerializer

    @extend_schema(
        operation_id="billing_checkout",
        request=InputSerializer,
        responses={201: OutputSerializer, **STRIPE_SESSION_ERRORS},
        tags=["billing"],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        back = _portal_billing_url()
        session = payments.checkout_start(
            organisation_id=_organisation_id(request),
            plan_code=data.validated_data["plan"],
            success_url=data.validated_data.get("success_url") or f"{back}?checkout=success",
            cancel_url=data.validated_data.get("cancel_url") or f"{back}?checkout=cancelled",
        )
        return Response(self.OutputSerializer(session).data, status=201)


class PortalInputSerializer(serializers.Serializer):
    return_url = serializers.URLField(required=False)


class PortalSessionSerializer(serializers.Serializer):
    url = serializers.URLField()


class PortalView(APIView):
    required_scope = "usage"
    InputSerializer = PortalInputSerializer
    OutputSerializer = PortalSessionSerializer

    @extend_schema(
        operation_id="billing_portal",
        request=InputSerializer,
        responses={201: OutputSerializer, **STRIPE_SESSION_ERRORS},
        tags=["billing"],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return_url = data.validated_data.get("return_url") or _portal_billing_url()
        session = payments.portal_start(organisation_id=_organisation_id(request), return_url=return_url)
        return Response(self.OutputSerializer(session).data, status=201)


class InvoiceSerializer(serializers.Serializer):
    id = serializers.CharField(allow_null=True)
    number = serializers.CharField(allow_null=True)
    status = serializers.CharField(allow_null=True)
    currency = serializers.CharField(allow_null=True)
    amount_due = serializers.IntegerField(allow_null=True)
    amount_paid = serializers.IntegerField(allow_null=True)
    period_start = serializers.DateTimeField(allow_null=True)
    period_end = serializers.DateTimeField(allow_null=True)
    created = serializers.DateTimeField(allow_null=True)
    hosted_invoice_url = serializers.URLField(allow_null=True)
    invoice_pdf = serializers.URLField(allow_null=True)


class InvoiceListSerializer(serializers.Serializer):
    invoices = InvoiceSerializer(many=True)
    upcoming = InvoiceSerializer(allow_null=True)
    has_more = serializers.BooleanField()


class InvoicesView(APIView):
    required_scope = "usage"
    OutputSerializer = InvoiceListSerializer

    class InputSerializer(serializers.Serializer):
        limit = serializers.IntegerField(min_value=1, max_value=100, default=payments.INVOICES_PAGE)
        starting_after = serializers.CharField(required=False, max_length=255)

    @extend_schema(
        operation_id="invoices_list",
        parameters=[InputSerializer],
        responses={
            200: OutputSerializer,
            **{k: v for k, v in ERROR_RESPONSES.items() if k in (400, 401, 403, 409, 429)},
            502: OpenApiResponse(ErrorEnvelope, description="Stripe did not answer."),
        },
        tags=["billing"],
    )
    def get(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        invoices = payments.invoices_for(organisation_id=_organisation_id(request), **data.validated_data)
        return Response(self.OutputSerializer(invoices).data)


class StripeWebhookView(APIView):
    # Public on purpose: Stripe has no API key; the Stripe-Signature header (HMAC, 300 s) authenticates it.
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="billing_stripe_webhook",
        request=OpenApiTypes.OBJECT,
        responses={
            200: inline_serializer("WebhookOutcome", fields={"outcome": serializers.CharField()}),
            400: OpenApiResponse(ErrorEnvelope, description="Missing, forged or stale signature."),
            409: OpenApiResponse(ErrorEnvelope, description="Billing is not configured."),
            502: OpenApiResponse(ErrorEnvelope, description="Stripe could not be re-fetched; redeliver."),
        },
        tags=["billing"],
    )
    def post(self, request: Request) -> HttpResponse:
        outcome = payments.webhook_receive(
            payload=request._request.body, signature=request.META.get("HTTP_STRIPE_SIGNATURE", "")
        )
        return Response({"outcome": outcome})
