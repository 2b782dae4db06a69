from django.urls import path

from analytics.apis import (
    DemandEntityApi,
    DemandStaleApi,
    DemandStatsApi,
    DemandTimeseriesApi,
    DemandTopApi,
    DemandTrendingApi,
    QuestionsGapsApi,
    QuestionsTopApi,
    RefreshQueueApi,
    RefreshStatsApi,
)

urlpatterns = [
    path("stats/", DemandStatsApi.as_view(), name="analytics-demand-stats"),
    path("top/", DemandTopApi.as_view(), name="analytics-demand-top"),
    path("trending/", DemandTrendingApi.as_view(), name="analytics-demand-trending"),
    path("stale/", DemandStaleApi.as_view(), name="analytics-demand-stale"),
    path("refresh-queue/", RefreshQueueApi.as_view(), name="analytics-demand-refresh-queue"),
    path("refresh-stats/", RefreshStatsApi.as_view(), name="analytics-demand-refresh-stats"),
    path("entity/<str:entity_id>/", DemandEntityApi.as_view(), name="analytics-demand-entity"),
    path("entity/<str:entity_id>/timeseries/", DemandTimeseriesApi.as_view(), name="analytics-demand-timeseries"),
]

# Routed under /api/analytics/questions/.
question_urlpatterns = [
    path("top/", QuestionsTopApi.as_view(), name="analytics-questions-top"),
    path("gaps/", QuestionsGapsApi.as_view(), name="analytics-questions-gaps"),
]
