"""One JSON error shape for every API failure: `{"error": "<readable message>"}` (+ `fields` for forms).

Internals (tracebacks, SQL) never reach a client: unexpected exceptions become a plain 500 JSON body.
Pages a person reads in a browser (the admin, under ADMIN_PATH) get Django's HTML error pages instead.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)

ADMIN_PATH = "/admin/"


def error_message(detail: Any) -> str:
    """Flatten a DRF error detail (str, list or dict of them) into one readable sentence."""
    if isinstance(detail, dict):
        if set(detail) == {"detail"}:
            return error_message(detail["detail"])
        parts = []
        for field, value in detail.items():
            text = error_message(value)
            parts.append(text if field in ("non_field_errors", "detail") else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(detail, (list, tuple)):
        return " ".join(error_message(item) for item in detail)
    return str(detail)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    body: dict[str, Any] = {"error": error_message(detail)}
    if isinstance(detail, dict) and set(detail) != {"detail"}:
        body["fields"] = detail
    response.data = body
    return response


def json_error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _is_admin_page(request: HttpRequest) -> bool:
    return request.path.startswith(ADMIN_PATH)


def handler400(request, exception=None) -> HttpResponse:
    if _is_admin_page(request):
        return defaults.bad_request(request, exception)
    return json_error(400, "Bad request.")


def handler403(request, exception=None) -> HttpResponse:
    if _is_admin_page(request):
        return defaults.permission_denied(request, exception)
    return json_error(403, "You do not have permission to perform this action.")


def handler404(request, exception=None) -> HttpResponse:
    if _is_admin_page(request):
        return defaults.page_not_found(request, exception)
    return json_error(404, "Not found.")


def handler500(request) -> HttpResponse:
    if _is_admin_page(request):
        return defaults.server_error(request)
    return json_error(500, "Internal server error.")
