import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def first_versions(apps, schema_editor):
    Pipeline = apps.get_model("pipelines", "Pipeline")
    PipelineVersion = apps.get_model("pipelines", "PipelineVersion")
    for pipeline in Pipeline.objects.all():
        PipelineVersion.objects.create(pipeline=pipeline, number=1, base_model_id=pipeline.base_model_id,
                                       spec=pipeline.spec, description=pipeline.description,
                                       created_by_id=pipeline.created_by_id)


class Migration(migrations.Migration):
    dependencies = [
        ("basemodels", "0001_initial"),
        ("pipelines", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="pipeline", name="version",
            field=models.PositiveIntegerField(default=1, help_text="number of the current version"),
        ),
        migrations.CreateModel(
            name="PipelineVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("number", models.PositiveIntegerField()),
                ("spec", models.JSONField(default=dict)),
                ("description", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("base_model", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="+",
                                                 to="basemodels.basemodel")),
                ("created_by", models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL,
                                                 to=settings.AUTH_USER_MODEL)),
                ("pipeline", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="versions",
                                               to="pipelines.pipeline")),
            ],
            options={"ordering": ["pipeline", "-number"]},
        ),
        migrations.AddConstraint(
            model_name="pipelineversion",
            constraint=models.UniqueConstraint(fields=("pipeline", "number"), name="pipelineversion_unique_number"),
        ),
        migrations.RunPython(first_versions, migrations.RunPython.noop),
    ]
