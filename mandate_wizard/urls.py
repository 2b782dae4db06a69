"""URL map. `/api/` is the browsable root that links every endpoint of the project."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from analytics.admin import demand_dashboard_view, refresh_queue_view
from analytics.apis import AnalyticsStatusApi
from analytics.urls import question_urlpatterns
from entities.answer_apis import AnswerApi
from entities.apis import UpdateRequestView
from mandate_wizard.auth import AnswerUserThrottle, LoginApi, LogoutApi, RefreshApi
from mandate_wizard.metrics import MetricsView

# Name shown at /api/ -> URL name. Each app adds its endpoints here.
API_ROOT_LINKS = {
    "auth-login": "auth-login",
    "auth-refresh": "auth-refresh",
    "auth-logout": "auth-logout",
    "answer": "answer",
    "entities": "entity-list",
    "analytics-demand-stats": "analytics-demand-stats",
    "analytics-demand-top": "analytics-demand-top",
    "analytics-demand-trending": "analytics-demand-trending",
    "analytics-demand-stale": "analytics-demand-stale",
    "analytics-demand-refresh-queue": "analytics-demand-refresh-queue",
    "analytics-demand-refresh-stats": "analytics-demand-refresh-stats",
    "analytics-questions-top": "analytics-questions-top",
    "analytics-questions-gaps": "analytics-questions-gaps",
    "analytics-status": "analytics-status",
    "events-streams-info": "events-streams-info",
    "events-update-request": "events-update-request",
    "events-dead-letter": "events-dead-letter",
    "events-dead-letter-replay": "events-dead-letter-replay",
    "schema": "schema",
    "docs": "swagger-ui",
}


class ApiRootView(APIView):
    """Every endpoint of the Mandate Wizard API."""

    permission_classes = [AllowAny]
    schema = None

    def get(self, request, format=None):
        return Response({name: reverse(url, request=request, format=format) for name, url in API_ROOT_LINKS.items()})


urlpatterns = [
    path("admin/demand-dashboard/", demand_dashboard_view, name="admin-demand-dashboard"),
    path("admin/refresh-queue/", refresh_queue_view, name="admin-refresh-queue"),
    path("admin/", admin.site.urls),
    path("auth/login", LoginApi.as_view(), name="auth-login"),
    path("auth/refresh", RefreshApi.as_view(), name="auth-refresh"),
    path("auth/logout", LogoutApi.as_view(), name="auth-logout"),
    path("api/", ApiRootView.as_view(), name="api-root"),
    path("api/answer", AnswerApi.as_view(throttle_classes=[AnswerUserThrottle]), name="answer"),
    path("api/", include("entities.urls")),
    path("api/analytics/demand/", include("analytics.urls")),
    path("api/analytics/status/", AnalyticsStatusApi.as_view(), name="analytics-status"),
    # Publishing UpdateRequests checks the entities, so the entity store serves it beside the operators' API.
    path("api/events/update-request", UpdateRequestView.as_view(), name="events-update-request"),
    path("api/analytics/questions/", include(question_urlpatterns)),
    path("api/events/", include("streams.urls")),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="schema"),
    path(
        "api/docs/", SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[AllowAny]), name="swagger-ui"
    ),
    path("api-auth/", include("rest_framework.urls")),
    path("metrics", MetricsView.as_view(), name="metrics"),
]

handler400 = "mandate_wizard.errors.handler400"
handler403 = "mandate_wizard.errors.handler403"
handler404 = "mandate_wizard.errors.handler404"
handler500 = "mandate_wizard.errors.handler500"
