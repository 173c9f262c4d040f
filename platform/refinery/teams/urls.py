from django.urls import path

from refinery.teams import audit_views, invite_views, member_views, token_views, views

app_name = "teams"
urlpatterns = [
    path("", views.team_list_view, name="list"),
    path("new/", views.team_create_view, name="create"),
    path("tokens/", token_views.token_list_view, name="tokens"),
    path("tokens/new/", token_views.token_create_view, name="token-create"),
    path("tokens/<int:token_id>/revoke/", token_views.token_revoke_view, name="token-revoke"),
    path("join/<str:key>/", invite_views.invitation_view, name="invitation"),
    path("<int:team_id>/members/", member_views.team_members_view, name="members"),
    path("<int:team_id>/members/<int:membership_id>/role/", member_views.member_role_view, name="member-role"),
    path("<int:team_id>/members/<int:membership_id>/remove/", member_views.member_remove_view, name="member-remove"),
    path("<int:team_id>/leave/", member_views.team_leave_view, name="leave"),
    path("<int:team_id>/invitations/new/", member_views.invitation_create_view, name="invitation-create"),
    path(
        "<int:team_id>/invitations/<int:invitation_id>/revoke/",
        member_views.invitation_revoke_view,
        name="invitation-revoke",
    ),
    path("<int:team_id>/audit/", audit_views.audit_view, name="audit"),
]
