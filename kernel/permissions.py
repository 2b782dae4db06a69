"""Access rules shared by the project's APIs."""

from __future__ import annotations

from django.conf import settings
from rest_framework.permissions import BasePermission


class AnalyticsAccess(BasePermission):
    """Staff only (what users ask about is sensitive); ANALYTICS_STAFF_ONLY=False opens it to any signed-in user.

    Anonymous requests are refused as unauthenticated (401, because JWT is the first authentication
    class and so names a WWW-Authenticate challenge); signed-in non-staff users get 403.
    """

    message = "Only staff users may read analytics."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return bool(user.is_staff) or not settings.ANALYTICS_STAFF_ONLY


class StaffOnly(BasePermission):
    """Staff only, whatever ANALYTICS_STAFF_ONLY says: operating the pipeline is never for every user.

    Anonymous -> 401 (as for AnalyticsAccess), signed-in non-staff -> 403.
    """

    message = "Only staff users may operate the event pipeline."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)
