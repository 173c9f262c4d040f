from django.contrib import admin

from refinery.runs.models import Run, StageRun


class StageRunInline(admin.TabularInline):
    model = StageRun
    extra = 0
    fields = ("index", "name", "method", "status", "attempt", "worker", "step", "total_steps", "error")
    readonly_fields = fields


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("number", "team", "name", "status", "created_at", "finished_at")
    list_filter = ("team", "status")
    inlines = [StageRunInline]
