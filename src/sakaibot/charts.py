"""The owner's picture of the last day: images per hour and wait times (matplotlib).

The only module that imports matplotlib, and only when a chart is asked for
(``sakaibot --help`` never loads it). It draws off screen (the Agg backend)
into PNG bytes; the caller runs it in a thread, as drawing takes a moment.
"""

from __future__ import annotations

import io
import statistics

from sakaibot.quota import made_an_image
from sakaibot.store import JobRecord, StoredJobState

#: The chart's size: small enough for a chat photo, large enough to read.
CHART_WIDTH_PX = 800
CHART_HEIGHT_PX = 450
_DPI = 100
_HOURS = 24
_HOUR_S = 3600


def hourly(records: list[JobRecord], now_s: float) -> tuple[list[int], list[float | None]]:
    """Images delivered and the median wait (s) in each of the last 24 hours, oldest first."""
    start_s = now_s - _HOURS * _HOUR_S
    images = [0] * _HOURS
    waits: list[list[float]] = [[] for _ in range(_HOURS)]
    for record in records:
        if record.created_at_s < start_s or record.created_at_s >= now_s:
            continue
        hour = int((record.created_at_s - start_s) // _HOUR_S)
        if record.state == StoredJobState.DONE:
            images[hour] += 1
        if record.waited_s is not None and (made_an_image(record) or record.cache_hit):
            waits[hour].append(record.waited_s)
    medians = [statistics.median(w) if w else None for w in waits]
    return images, medians


def draw_day_chart(records: list[JobRecord], now_s: float) -> bytes:
    """A PNG of :func:`hourly` for the day before ``now_s`` (:data:`CHART_WIDTH_PX` wide)."""
    # A Figure of its own, not pyplot: no global state, and PNG output is Agg's.
    from matplotlib.figure import Figure

    images, medians = hourly(records, now_s)
    hours_ago = list(range(-_HOURS + 1, 1))
    figure = Figure(figsize=(CHART_WIDTH_PX / _DPI, CHART_HEIGHT_PX / _DPI), dpi=_DPI)
    bars = figure.add_subplot()
    bars.bar(hours_ago, images, color="#4C72B0", label="images delivered")
    bars.set_xlabel("hours ago")
    bars.set_ylabel("images per hour")
    bars.set_title("SakaiBot: the last 24 hours")
    waits = bars.twinx()
    points = [(h, m) for h, m in zip(hours_ago, medians, strict=True) if m is not None]
    waits.plot(
        [h for h, _ in points],
        [m for _, m in points],
        color="#DD8452",
        marker="o",
        label="median wait (s)",
    )
    waits.set_ylabel("median wait (s)")
    waits.set_ylim(bottom=0)
    figure.legend(loc="upper left")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()
