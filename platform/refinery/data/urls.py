from django.urls import path

from refinery.data import views

app_name = "data"
urlpatterns = [
    path("", views.dataset_list_view, name="list"),
    path("upload/", views.dataset_upload_view, name="upload"),
    path("<int:pk>/", views.dataset_detail_view, name="detail"),
    path("<int:pk>/delete/", views.dataset_delete_view, name="delete"),
    path("<int:pk>/versions/<int:version>/diff/", views.dataset_version_diff_view, name="version-diff"),
]
