"""CSV exports of the analytics reports: `?format=csv` on a report view (djangorestframework-csv's renderer).

A report view inherits `CsvReportMixin` and names the list inside its JSON envelope (`csv_rows`); that list
becomes the rows, its item serializer's fields the header, in their order. A report that is one object
(`csv_rows = None`, e.g. refresh-stats) is one row under its own fields. Everything else (parameters,
their validation, the selector) is the JSON view's. Errors (bad parameters, 401/403, 503) and OPTIONS stay JSON.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings
from rest_framework_csv.renderers import CSVRenderer

from kernel.openapi import ERROR_RESPONSES

FORMATS = ("json", "csv")

CSV_FORMAT = OpenApiParameter(
    "format",
    str,
    OpenApiParameter.QUERY,
    enum=list(FORMATS),
    default="json",
    description="csv: the report's rows as a text/csv attachment (a header row, then one row per item).",
)


class ReportCsvRenderer(CSVRenderer):
    """The view's `csv_rows` list as CSV, columns in the item serializer's field order.

    null is an empty cell, booleans are written `true`/`false` as in the JSON.
    """

    def render(self, data, media_type=None, renderer_context=None):
        renderer_context = renderer_context or {}
        view = renderer_context["view"]
        context = {**renderer_context, "header": view.csv_header()}
        return super().render([data] if view.csv_rows is None else data[view.csv_rows], media_type, context)

    def flatten_item(self, item):
        if isinstance(item, bool):
            item = "true" if item else "false"
        return super().flatten_item(item)


class CsvReportMixin:
    """`?format=csv` for an APIView whose `OutputSerializer` has the list field named by `csv_rows`."""

    csv_rows: str | None
    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, ReportCsvRenderer]

    def csv_header(self) -> list[str]:
        if self.csv_rows is None:
            return list(self.OutputSerializer().fields)
        return list(self.OutputSerializer().fields[self.csv_rows].child.fields)

    def perform_content_negotiation(self, request, force=False):
        try:
            return super().perform_content_negotiation(request, force)
        except Http404:
            # DRF answers an unknown ?format= with 404; it is a bad parameter.
            raise ValidationError({"format": f"must be one of {', '.join(FORMATS)}."}) from None

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(getattr(request, "accepted_renderer", None), ReportCsvRenderer):
            if response.status_code >= 300 or request.method not in ("GET", "HEAD"):  # errors, OPTIONS
                request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
            else:
                filename = f"{request.resolver_match.url_name}.csv"
                response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return super().finalize_response(request, response, *args, **kwargs)


def csv_report_responses(serializer: Any) -> dict:
    """The OpenAPI responses of a report view: its JSON body, the CSV text, JSON errors."""
    errors = {(code, JSONRenderer.media_type): response for code, response in ERROR_RESPONSES.items()}
    return {
        (200, JSONRenderer.media_type): serializer,
        (200, ReportCsvRenderer.media_type): OpenApiResponse(
            OpenApiTypes.STR, description="With format=csv: a header row, then one row per item."
        ),
        **errors,
    }
