from django.urls import path

from refinery.runs import views

app_name = "runs"
urlpatterns = [
    path("", views.run_list_view, name="list"),
    path("forgetting/", views.run_forgetting_view, name="forgetting"),
    path("<int:number>/", views.run_detail_view, name="detail"),
    path("<int:number>/metrics.json", views.run_metrics_view, name="metrics"),
    path("<int:number>/cancel/", views.run_cancel_view, name="cancel"),
    path("<int:number>/rerun/", views.run_rerun_view, name="rerun"),
]

# Compare (issue 6): ?run=3&run=7 or ?stage=3:sft&stage=7:sft; see refinery/runs/compare.py.
from refinery.runs import compare  # noqa: E402

urlpatterns += [
    path("compare/", compare.compare_view, name="compare"),
    path("compare.csv", compare.compare_csv_view, name="compare-csv"),
]
urlpatterns += [
    path("<int:number>/artifacts/", views.run_artifacts_view, name="artifacts"),
    path("<int:number>/artifacts/download/", views.run_artifact_download_view, name="artifact-download"),
]

# Notes and tags on a run (issue 6): the panel templates/runs/_annotations.html loads and posts to these.
from refinery.runs import annotation_views  # noqa: E402

urlpatterns += [
    path("<int:number>/annotations/", annotation_views.run_annotations_view, name="annotations"),
    path("<int:number>/notes/", annotation_views.run_note_add_view, name="note-add"),
    path("<int:number>/notes/<int:pk>/delete/", annotation_views.run_note_delete_view, name="note-delete"),
    path("<int:number>/tags/", annotation_views.run_tag_add_view, name="tag-add"),
    path("<int:number>/tags/remove/", annotation_views.run_tag_remove_view, name="tag-remove"),
]

# Promotion gates (issue 12): an owner approves or rejects a candidate awaiting approval.
from refinery.registry import gate_views  # noqa: E402

urlpatterns += [
    path("<int:number>/gates/<str:stage>/approve/", gate_views.gate_approve_view, name="gate-approve"),
    path("<int:number>/gates/<str:stage>/reject/", gate_views.gate_reject_view, name="gate-reject"),
]
