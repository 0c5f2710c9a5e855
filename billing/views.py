"""Usage, as the organisation's own API keys see it."""

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apiservice.auth import request_principal
from apiservice.schema import READ_ERROR_RESPONSES

from . import selectors


class UsageView(APIView):
    required_scope = "usage"

    class InputSerializer(serializers.Serializer):
        start = serializers.DateTimeField(required=False)
        end = serializers.DateTimeField(required=False)
        group_by = serializers.ChoiceField(choices=selectors.GROUPINGS, default="day")

        def validate(self, attrs: dict) -> dict:
            end = attrs.get("end") or timezone.now()
            start = attrs.get("start") or end - timedelta(days=30)
            if start >= end:
                raise serializers.ValidationError({"start": "start must be before end."})
            if end - start > timedelta(days=366):
                raise serializers.ValidationError({"start": "At most 366 days per query."})
            return {**attrs, "start": start, "end": end}

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
                    "totals": serializers.DictField(child=serializers.IntegerField()),
                    "buckets": serializers.ListField(child=serializers.DictField()),
                },
            ),
            **READ_ERROR_RESPONSES,
        },
        tags=["usage"],
    )
    def get(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        principal = request_principal(request)
        assert principal is not None  # HasAPIKey guarantees it
        summary = selectors.usage_summary(organisation_id=principal.organisation_id, **data.validated_data)
        return Response(summary)
