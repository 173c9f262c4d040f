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
