from django.urls import path

from refinery.registry import gate_views
from refinery.runs.views import annotations, compare, lifecycle, listing

app_name = "runs"
urlpatterns = [
    path("", listing.run_list_view, name="list"),
    path("forgetting/", lifecycle.run_forgetting_view, name="forgetting"),
    path("<int:number>/", lifecycle.run_detail_view, name="detail"),
    path("<int:number>/metrics.json", lifecycle.run_metrics_view, name="metrics"),
    path("<int:number>/cancel/", lifecycle.run_cancel_view, name="cancel"),
    path("<int:number>/rerun/", lifecycle.run_rerun_view, name="rerun"),
    # Compare: ?run=3&run=7 or ?stage=3:sft&stage=7:sft (refinery/runs/selectors/compare.py).
    path("compare/", compare.compare_view, name="compare"),
    path("compare.csv", compare.compare_csv_view, name="compare-csv"),
    path("<int:number>/artifacts/", lifecycle.run_artifacts_view, name="artifacts"),
    path("<int:number>/artifacts/download/", lifecycle.run_artifact_download_view, name="artifact-download"),
    # Notes and tags on a run: the panel templates/runs/_annotations.html loads and posts to these.
    path("<int:number>/annotations/", annotations.run_annotations_view, name="annotations"),
    path("<int:number>/notes/", annotations.run_note_add_view, name="note-add"),
    path("<int:number>/notes/<int:pk>/delete/", annotations.run_note_delete_view, name="note-delete"),
    path("<int:number>/tags/", annotations.run_tag_add_view, name="tag-add"),
    path("<int:number>/tags/remove/", annotations.run_tag_remove_view, name="tag-remove"),
    # Promotion gates: an owner approves or rejects a candidate awaiting approval.
    path("<int:number>/gates/<str:stage>/approve/", gate_views.gate_approve_view, name="gate-approve"),
    path("<int:number>/gates/<str:stage>/reject/", gate_views.gate_reject_view, name="gate-reject"),
]
