"""The compare page and its CSV (see refinery.runs.selectors.compare for what is compared and how)."""

from __future__ import annotations

import csv
from collections.abc import Iterable

from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from refinery.core.auth import team_required
from refinery.runs.models import Run
from refinery.runs.selectors.compare import (
    CompareError,
    Item,
    Pick,
    compare_charts,
    compare_items,
    compare_numbers,
    compare_picks,
    config_csv_rows,
    config_diff,
    item_flat_config,
    metrics_csv_rows,
)


def _items_or_error(request) -> list[Item]:
    picks = compare_picks(request.GET)
    try:
        return compare_items(team=request.team, picks=picks)
    except Run.DoesNotExist:
        raise Http404("no such run in this team") from None


def _query(picks: Iterable[Pick], **extra) -> str:
    return urlencode([p.param for p in picks] + [(k, v) for k, v in extra.items() if v])


@require_GET
@team_required
def compare_view(request):
    """The compare page; with htmx targeting #compare-charts (the step / wall-time toggle), only the charts."""
    x = "time" if request.GET.get("x") == "time" else "step"
    show_all = request.GET.get("all") == "1"
    try:
        items = _items_or_error(request)
    except CompareError as exc:
        return render(request, "runs/compare.html", {"error": str(exc), "nav": "runs"}, status=400)
    picks = [item.pick for item in items]
    csv_url = reverse("runs:compare-csv") + "?"
    context = {
        "items": items,
        "mode": "stage" if items[0].stage else "run",
        "x": x,
        "show_all": show_all,
        "nav": "runs",
        "charts": compare_charts(team=request.team, items=items, x=x),
        "step_url": "?" + _query(picks, all="1" if show_all else ""),
        "time_url": "?" + _query(picks, x="time", all="1" if show_all else ""),
        "csv_url": csv_url + _query(picks),
        "config_csv_url": csv_url + _query(picks, part="config"),
        "config_all_csv_url": csv_url + _query(picks, part="config", all="1"),
    }
    if request.htmx and request.htmx.target == "compare-charts":
        return render(request, "runs/compare.html#compare-charts", context)
    for item in items:
        item.remove_url = "?" + _query([p for p in picks if p != item.pick], x="time" if x == "time" else "")
    diff = config_diff([item_flat_config(item) for item in items], show_all=True)  # the page hides the same
    context.update(diff=diff, differing=sum(1 for row in diff if row["differs"]), table=compare_numbers(items))
    return render(request, "runs/compare.html", context)


@require_GET
@team_required
def compare_csv_view(request):
    """The metric table (default) or, with part=config, the config diff (all=1: every key) as CSV."""
    part = "config" if request.GET.get("part") == "config" else "metrics"
    try:
        items = _items_or_error(request)
    except CompareError as exc:
        return HttpResponse(str(exc) + "\n", status=400, content_type="text/plain; charset=utf-8")
    if part == "config":
        diff = config_diff([item_flat_config(item) for item in items], show_all=request.GET.get("all") == "1")
        rows = config_csv_rows(items, diff)
    else:
        rows = metrics_csv_rows(items, compare_numbers(items))
    name = "-".join(p.param[1].replace(":", "_") for p in (item.pick for item in items))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="compare-{part}-{safe}.csv"'
    csv.writer(response).writerows(rows)
    return response
