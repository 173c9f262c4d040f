"""The runs list page (refinery.runs.selectors.listing does the work)."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseStopPolling

from refinery.core.auth import team_required
from refinery.runs.selectors.listing import RunFilters, run_filter_choices, run_page


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
@team_required
def run_list_view(request):
    """The team's runs: filters, search, sort and page from the GET parameters. htmx asks for the results
    (`run-results`: a filter, sort or page change; the URL follows) or for the rows alone (`run-rows`: the
    live poll, which stops once no run on the page can change)."""
    filters = RunFilters.from_query(request.GET)
    page = run_page(team=request.team, filters=filters)
    context = {"page": page, "runs": page.runs, "filters": page.filters, "active": page.active, "nav": "runs"}
    target = request.htmx.target if request.htmx else None
    if target == "run-rows":
        response = render(request, "runs/list.html#run-rows", context)
        return response if page.active else HttpResponseStopPolling(response.content)
    if target == "run-results":
        response = render(request, "runs/list.html#run-results", context)
        response["HX-Push-Url"] = request.path + page.filters.url()
        return response
    context["choices"] = run_filter_choices(team=request.team)
    return render(request, "runs/list.html", context)
