"""The admin's "Demand dashboard": stats, top, trending, stale, questions, gaps, 30 days of queries, stream health.

Every number comes from analytics.selectors and streams.selectors, the same functions the API uses.
The page is linked from the admin index (`index_template`) and routed in mandate_wizard/urls.py.
"""

from __future__ import annotations

import logging

import redis
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from analytics.charts import timeseries_chart
from analytics.selectors import (
    TIMEFRAMES,
    demand_stale,
    demand_stats,
    demand_timeseries,
    demand_top,
    demand_trending,
    questions_gaps,
    questions_top,
)
from streams.selectors import streams_info

logger = logging.getLogger(__name__)

DASHBOARD_ROWS = 10
CHART_DAYS = 30

admin.site.index_template = "analytics/admin/index.html"


def demand_dashboard(request: HttpRequest) -> HttpResponse:
    """The dashboard page; `?timeframe=1d|7d|30d` switches the trending and question tables (default 7d)."""
    timeframe = request.GET.get("timeframe", "7d")
    if timeframe not in TIMEFRAMES:
        timeframe = "7d"
    now = timezone.now()
    series = demand_timeseries(entity_id=None, days=CHART_DAYS, interval="day", now=now)
    try:
        pipeline = streams_info()
        pipeline_error = None
    except redis.RedisError as error:
        logger.warning("dashboard: streams info unavailable: %s", error)
        pipeline, pipeline_error = None, f"Redis is unreachable ({type(error).__name__})."
    context = {
        **admin.site.each_context(request),
        "title": "Demand dashboard",
        "stats": demand_stats(now=now),
        "top": demand_top(limit=DASHBOARD_ROWS, now=now),
        "timeframes": TIMEFRAMES,
        "timeframe": timeframe,
        "trending": demand_trending(timeframe=timeframe, limit=DASHBOARD_ROWS, now=now),
        "stale": demand_stale(limit=DASHBOARD_ROWS, now=now),
        "top_questions": questions_top(timeframe=timeframe, limit=DASHBOARD_ROWS, now=now),
        "gaps": questions_gaps(timeframe=timeframe, limit=DASHBOARD_ROWS, now=now),
        "series": series,
        "chart": timeseries_chart(series=series, title=f"Queries per day, last {CHART_DAYS} days"),
        "pipeline": pipeline,
        "pipeline_error": pipeline_error,
    }
    return TemplateResponse(request, "analytics/admin/demand_dashboard.html", context)


demand_dashboard_view = admin.site.admin_view(demand_dashboard)
