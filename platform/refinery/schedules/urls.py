from django.urls import path

from refinery.schedules import views

app_name = "schedules"
urlpatterns = [
    path("", views.schedule_list_view, name="list"),
    path("new/", views.schedule_create_view, name="create"),
    path("<int:pk>/", views.schedule_detail_view, name="detail"),
    path("<int:pk>/edit/", views.schedule_edit_view, name="edit"),
    path("<int:pk>/pause/", views.schedule_pause_view, name="pause"),
    path("<int:pk>/resume/", views.schedule_resume_view, name="resume"),
    path("<int:pk>/run-now/", views.schedule_run_now_view, name="run-now"),
    path("<int:pk>/delete/", views.schedule_delete_view, name="delete"),
]
