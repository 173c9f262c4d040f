from django.urls import path

from refinery.registry import views

app_name = "registry"
urlpatterns = [
    path("", views.model_list_view, name="list"),
    path("promote/", views.promote_view, name="promote"),
    path("<str:name>/", views.model_detail_view, name="detail"),
    path("<str:name>/aliases/set/", views.alias_set_view, name="alias-set"),
    path("<str:name>/aliases/remove/", views.alias_remove_view, name="alias-remove"),
    path("<str:name>/aliases/rollback/", views.alias_rollback_view, name="alias-rollback"),
]
