from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from refinery.api.views import api
from refinery.core import health
from refinery.teams import secret_views
from refinery.teams.quota_views import team_quota_view
from refinery.teams.views import team_switch_view

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="runs:list", permanent=False)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("teams/switch/", team_switch_view, name="team-switch"),
    path("teams/secrets/", secret_views.team_secrets_view, name="team-secrets"),
    path("teams/secrets/<str:name>/delete/", secret_views.team_secret_delete_view, name="team-secret-delete"),
    path("teams/quota/", team_quota_view, name="team-quota"),
    path("teams/webhooks/", include("refinery.notifications.urls")),
    path("teams/", include("refinery.teams.urls")),
    path("runs/", include("refinery.runs.urls")),
    path("pipelines/", include("refinery.pipelines.urls")),
    path("sweeps/", include("refinery.sweeps.urls")),
    path("schedules/", include("refinery.schedules.urls")),
    path("registry/", include("refinery.registry.urls")),
    path("datasets/", include("refinery.data.urls")),
    path("models/", include("refinery.basemodels.urls")),
    path("api/v1/", api.urls),
    path("admin/", admin.site.urls),
]
