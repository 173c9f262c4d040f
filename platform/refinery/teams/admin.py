from django.contrib import admin

from refinery.teams.models import ApiToken, AuditEvent, Invitation, Membership, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    inlines = [MembershipInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "team", "name", "key_prefix", "scope", "created_at", "expires_at", "last_used_at",
                    "revoked_at")
    readonly_fields = ("key_hash", "key_prefix")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "team", "user", "action", "target")
    list_filter = ("team", "action")


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ("team", "role", "email", "created_by", "created_at", "expires_at", "accepted_by", "revoked_at")
    readonly_fields = ("key_hash",)
