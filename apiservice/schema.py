"""OpenAPI pieces shared by every app: the bearer scheme and the documented error envelopes."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

ErrorDetail = inline_serializer(
    "ErrorDetail",
    fields={
        "type": serializers.CharField(),
        "code": serializers.CharField(),
        "message": serializers.CharField(),
        "param": serializers.CharField(allow_null=True),
        "request_id": serializers.CharField(),
    },
)
ErrorEnvelope = inline_serializer("Error", fields={"error": ErrorDetail})
OIPError = inline_serializer("OIPError", fields={"error": serializers.CharField()})


def _errors(serializer: object, statuses: dict[int, str]) -> dict[int, OpenApiResponse]:
    return {status: OpenApiResponse(serializer, description=text) for status, text in statuses.items()}


ERROR_RESPONSES = _errors(
    ErrorEnvelope,
    {
        400: "Invalid request or input (names the offending `param`).",
        401: "Missing, malformed, unknown, revoked or expired API key.",
        402: "Payment required: subscription cancelled or past due beyond the grace period.",
        403: "The key lacks the scope this endpoint needs.",
        404: "No such object visible to your organisation.",
        409: "Conflict (e.g. the version is not servable).",
        413: "Request body over the size cap.",
        422: "Unprocessable (e.g. idempotency key reused with another body).",
        429: "Rate limit or quota exceeded.",
    },
)
READ_ERROR_RESPONSES = {k: v for k, v in ERROR_RESPONSES.items() if k in (400, 401, 403, 404, 429)}
OIP_ERROR_RESPONSES = _errors(
    OIPError,
    {
        400: "Invalid inference request.",
        401: "Missing or invalid API key.",
        403: "The key lacks the `predict` scope.",
        402: "Payment required: subscription cancelled or past due beyond the grace period.",
        404: "Unknown model or version.",
        409: "A request with this Idempotency-Key is still in flight (Retry-After).",
        413: "Request body over the size cap.",
        422: "Idempotency-Key reused with another body.",
        429: "Rate limit or quota exceeded.",
        503: "The model version is not ready.",
    },
)


class BearerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apiservice.auth.APIKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: object) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "mm_<prefix>.<secret>"}


def paginated(name: str, item: object) -> object:
    """The cursor-paginated list envelope around `item` (APIView lists are not detected by spectacular)."""
    return inline_serializer(
        name,
        fields={
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializers.ListField(child=item),  # type: ignore[arg-type]
        },
    )


PAGE_PARAMETERS = [
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        OpenApiParameter.QUERY,
        description="Items per page, 1 to 100 (default 20).",
    ),
    OpenApiParameter(
        "cursor", str, OpenApiParameter.QUERY, description="Opaque; from the previous page's `next` or `previous`."
    ),
]
MODEL_PATH = OpenApiParameter(
    "model", str, OpenApiParameter.PATH, description="Model name.", examples=[OpenApiExample("iris", value="iris")]
)
VERSION_PATH = OpenApiParameter(
    "version",
    str,
    OpenApiParameter.PATH,
    description="A version number, an alias, or `latest`.",
    examples=[OpenApiExample("number", value="1"), OpenApiExample("alias", value="production")],
)
ALIAS_PATH = OpenApiParameter(
    "alias",
    str,
    OpenApiParameter.PATH,
    description="An alias; an error about it (`version_not_found`, `version_not_ready`) names `alias` in `param`.",
    examples=[OpenApiExample("production", value="production")],
)
# What billing.idempotency accepts: 1 to 255 printable characters (leading and trailing spaces are not
# part of a header value, so the pattern leaves them out).
IDEMPOTENCY_KEY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"},
    OpenApiParameter.HEADER,
    required=False,
    description="The same key and body within 24 h replays the first answer; another body is 422.",
)
