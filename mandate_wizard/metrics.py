"""The web process's `/metrics`: process metrics and the pipeline gauges (streams.metrics), access-checked.

Access is set by METRICS_ACCESS / METRICS_TOKEN. The worker's own registry is in streams.metrics.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from rest_framework.exceptions import NotAuthenticated, NotFound, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from streams.metrics import PipelineCollector

METRICS_ACCESS_CHOICES = ("off", "staff", "any")


def _web_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, PipelineCollector()):
        registry.register(collector)
    return registry


WEB_REGISTRY = _web_registry()


class MetricsAccess(BasePermission):
    """METRICS_ACCESS: off (404), staff (staff users or the METRICS_TOKEN bearer), any (public)."""

    def has_permission(self, request: Request, view) -> bool:
        access = settings.METRICS_ACCESS
        if access == "any":
            return True
        if access != "staff":
            raise NotFound("Metrics are turned off (METRICS_ACCESS=off).")
        token = settings.METRICS_TOKEN
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), token):
            return True
        if not request.user or not request.user.is_authenticated:
            raise NotAuthenticated("Metrics need a staff login or the metrics token.")
        if not request.user.is_staff:
            raise PermissionDenied("Only staff users may read metrics.")
        return True


class MetricsView(APIView):
    """Prometheus text exposition of the web process."""

    permission_classes = [MetricsAccess]
    schema = None

    def perform_authentication(self, request: Request) -> None:
        # A bearer METRICS_TOKEN is not a JWT: authenticate lazily, only when the permission asks.
        pass

    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(generate_latest(WEB_REGISTRY), content_type=CONTENT_TYPE_LATEST)
