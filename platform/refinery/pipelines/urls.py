from django.urls import path

from refinery.pipelines import views

app_name = "pipelines"
urlpatterns = [
    path("", views.pipeline_list_view, name="list"),
    path("new/", views.pipeline_create_view, name="create"),
    path("stage-form/", views.stage_form_view, name="stage-form"),
    path("<int:pk>/", views.pipeline_detail_view, name="detail"),
    path("<int:pk>/edit/", views.pipeline_edit_view, name="edit"),
    path("<int:pk>/run/", views.pipeline_run_view, name="run"),
]
