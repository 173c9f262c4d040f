from django.contrib import admin

from refinery.teams.models import ApiToken, AuditEvent, Invitation, Membership, Team, TeamQuota
from refinery.teams.quotas import team_wake_queued


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    inlines = [MembershipInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = (
        "user",
        "team",
        "name",
        "key_prefix",
        "scope",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    readonly_fields = ("key_hash", "key_prefix")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "team", "user", "action", "target")
    list_filter = ("team", "action")


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ("team", "role", "email", "created_by", "created_at", "expires_at", "accepted_by", "revoked_at")
    readonly_fields = ("key_hash",)


@admin.register(TeamQuota)
class TeamQuotaAdmin(admin.ModelAdmin):
    """An operator's limits for a team (blank: no limit). Saving or deleting wakes the team's queued
    stages, since a raised or dropped running-stage limit lets them start now."""

    list_display = ("team", "running_stages", "queued_runs", "stage_seconds", "storage_bytes", "updated_at")
    readonly_fields = ("updated_at",)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        team_wake_queued(team_id=obj.team_id)

    def delete_model(self, request, obj):
        team_id = obj.team_id
        super().delete_model(request, obj)
        team_wake_queued(team_id=team_id)
