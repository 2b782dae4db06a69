"""Bar charts drawn as inline SVG on the server: the admin pages need no JavaScript and no network."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString


def svg_bar_chart(
    *,
    points: Sequence[tuple[str, int]],
    title: str,
    width: int = 720,
    height: int = 180,
    color: str = "#417690",
) -> SafeString:
    """One bar per (label, value), left to right, with the maximum and the first/last labels on the axes.

    Every bar carries `data-label`/`data-value` and a <title> tooltip; the <svg> carries `data-total`.
    """
    left, bottom, top = 44, 22, 10
    plot_width, plot_height = width - left - 8, height - bottom - top
    peak = max((value for _label, value in points), default=0)
    slot = plot_width / max(len(points), 1)
    bar_width = max(slot * 0.8, 1)
    bars = []
    for index, (label, value) in enumerate(points):
        bar_height = plot_height * value / peak if peak else 0
        bars.append(
            (
                f"{left + index * slot + (slot - bar_width) / 2:.1f}",
                f"{top + plot_height - bar_height:.1f}",
                f"{bar_width:.1f}",
                f"{bar_height:.1f}",
                label,
                value,
                f"{label}: {value}",
            )
        )
    rects = format_html_join(
        "",
        '<rect class="bar" x="{}" y="{}" width="{}" height="{}" data-label="{}" data-value="{}">'
        "<title>{}</title></rect>",
        bars,
    )
    first_label = points[0][0] if points else ""
    last_label = points[-1][0] if points else ""
    return format_html(
        '<svg class="bar-chart" role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg" '
        'width="{width}" height="{height}" viewBox="0 0 {width} {height}" data-total="{total}" '
        'style="max-width:100%;height:auto;font:11px sans-serif">'
        '<g fill="{color}">{rects}</g>'
        '<line x1="{left}" y1="{axis_y}" x2="{right}" y2="{axis_y}" stroke="#999"/>'
        '<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y}" stroke="#999"/>'
        '<text x="{label_x}" y="{top_text}" text-anchor="end">{peak}</text>'
        '<text x="{label_x}" y="{axis_y}" text-anchor="end">0</text>'
        '<text x="{left}" y="{bottom_text}">{first}</text>'
        '<text x="{right}" y="{bottom_text}" text-anchor="end">{last}</text>'
        "</svg>",
        title=title,
        width=width,
        height=height,
        total=sum(value for _label, value in points),
        color=color,
        rects=rects,
        left=left,
        right=left + plot_width,
        top=top,
        axis_y=top + plot_height,
        label_x=left - 4,
        top_text=top + 8,
        peak=peak,
        bottom_text=height - 6,
        first=first_label,
        last=last_label,
    )


def timeseries_chart(*, series: dict, title: str) -> SafeString:
    """A bar chart of a `demand_timeseries` result, one bar per day (labelled YYYY-MM-DD)."""
    points = [(point["start"].strftime("%Y-%m-%d"), point["count"]) for point in series["timeseries"]]
    return svg_bar_chart(points=points, title=title)
