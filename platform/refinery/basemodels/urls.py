from django.urls import path

from refinery.basemodels import views

app_name = "basemodels"
urlpatterns = [
    path("", views.base_model_list_view, name="list"),
    path("new/", views.base_model_create_view, name="create"),
    path("upload/", views.base_model_upload_view, name="upload"),
    path("<int:pk>/", views.base_model_detail_view, name="detail"),
]
