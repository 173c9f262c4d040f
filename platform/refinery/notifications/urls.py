from django.urls import path

from refinery.notifications import views

app_name = "notifications"
urlpatterns = [
    path("", views.webhook_list_view, name="list"),
    path("<int:pk>/", views.webhook_detail_view, name="detail"),
    path("<int:pk>/test/", views.webhook_test_view, name="test"),
    path("<int:pk>/active/", views.webhook_active_view, name="active"),
    path("<int:pk>/delete/", views.webhook_delete_view, name="delete"),
    path("<int:pk>/deliveries/<int:delivery_id>/redeliver/", views.delivery_redeliver_view, name="redeliver"),
]
