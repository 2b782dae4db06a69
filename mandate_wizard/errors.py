"""One JSON error shape for every API failure: `{"error": "<readable message>"}` (+ `fields` for forms).

Internals (tracebacks, SQL) never reach a client: unexpected exceptions become a plain 500 JSON body, and an
unreachable dependency (PostgreSQL down or shutting down, Redis down) a 503 with `Retry-After`, wherever it is
raised: in a DRF view (`api_exception_handler`) or outside one, in middleware, authentication or the admin
(`handler500`, which Django calls for every unhandled exception).
Pages a person reads in a browser (the admin, under ADMIN_PATH) get Django's HTML error pages instead.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from redis.exceptions import ClusterDownError, RedisClusterException
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from kernel.replica import ReplicaUnavailable

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


def dependency_unavailable(exc: BaseException | None) -> str | None:
    """Name of the unreachable dependency behind `exc` ("PostgreSQL", "Redis"), or None for any other error.

    psycopg's AdminShutdown, refused connections and broken connections all reach Django as OperationalError
    or InterfaceError; Django drops an unusable connection at the end of the request (CONN_HEALTH_CHECKS), so
    the next request reconnects by itself. A report that reads from the replica names the replica (its
    reads never fall back to the primary: docs/operations.md).
    """
    if isinstance(exc, ReplicaUnavailable):
        return "The PostgreSQL replica"
    if isinstance(exc, (OperationalError, InterfaceError)):
        return "PostgreSQL"
    # On a cluster, a primary that is down makes its slots (or, by default, the whole cluster) refuse
    # commands; with no node reachable the cluster client raises RedisClusterException.
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, ClusterDownError, RedisClusterException)):
        return "Redis"
    return None


def _unavailable_message(dependency: str) -> str:
    return f"{dependency} is unreachable; try again shortly."


def _retry_after() -> str:
    return str(settings.SERVICE_RETRY_AFTER_SECONDS)


def unavailable_response(dependency: str) -> JsonResponse:
    """503 JSON with `Retry-After` (SERVICE_RETRY_AFTER_SECONDS) for an unreachable dependency."""
    response = json_error(503, _unavailable_message(dependency))
    response["Retry-After"] = _retry_after()
    return response


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    dependency = dependency_unavailable(exc)
    if dependency is not None:
        logger.warning("%s unreachable: %s", dependency, type(exc).__name__)
        return Response(
            {"error": _unavailable_message(dependency)}, status=503, headers={"Retry-After": _retry_after()}
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if response.status_code == 503:
        response["Retry-After"] = _retry_after()
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
    """500 JSON, or a 503 with `Retry-After` when the unhandled exception is an unreachable dependency.

    Admin pages get HTML: Django's 500 page, or a plain 503 page.
    """
    dependency = dependency_unavailable(sys.exc_info()[1])
    if dependency is None:
        if _is_admin_page(request):
            return defaults.server_error(request)
        return json_error(500, "Internal server error.")
    if _is_admin_page(request):
        response = HttpResponse(
            f"<!doctype html><title>Service unavailable</title><h1>Service unavailable</h1>"
            f"<p>{_unavailable_message(dependency)}</p>",
            status=503,
        )
        response["Retry-After"] = _retry_after()
        return response
    return unavailable_response(dependency)
