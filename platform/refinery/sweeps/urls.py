from django.urls import path

from refinery.sweeps import views

app_name = "sweeps"
urlpatterns = [
    path("", views.sweep_list_view, name="list"),
    path("new/", views.sweep_create_view, name="create"),
    path("<int:pk>/", views.sweep_detail_view, name="detail"),
]
