"""`make run` seeds a demo schedule: an interval, paused until someone resumes it, of a pipeline that ends in a
promotion gate."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from refinery.schedules.models import Schedule


@pytest.mark.django_db
def test_seed_demo_adds_a_paused_interval_schedule():
    call_command("seed_demo", "--no-run")
    schedule = Schedule.objects.get()
    assert (schedule.name, schedule.trigger, schedule.interval_seconds, schedule.paused) == (
        "nightly-addition",
        "interval",
        86400,
        True,
    )
    assert schedule.pipeline.name == "addition: nightly retrain behind a gate" and schedule.pipeline_version.number == 1
    gate = schedule.pipeline_version.spec["stages"][1]
    assert (gate["method"], gate["input"], gate["config"]["registered_model"], gate["config"]["alias"]) == (
        "gate",
        "sft",
        "adder",
        "production",
    )
    assert schedule.pipeline_version.spec["retention_dataset_id"]
    assert set(schedule.bindings.values()) == {"latest"}
    call_command("seed_demo", "--no-run")  # seeded once
    assert Schedule.objects.count() == 1
