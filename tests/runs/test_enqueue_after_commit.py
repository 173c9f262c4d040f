"""Fault case 7: a wake-up is sent only when the transaction that queued the stage commits.
Real PostgreSQL transactions (no test-case wrapping transaction), the send recorded instead of
reaching the broker."""

from __future__ import annotations

import pytest
from django.db import transaction

from refinery.runs.models import Run, StageRun
from refinery.runs.services import run_create

pytestmark = pytest.mark.django_db(transaction=True)


class Abort(Exception):
    pass


def test_a_run_created_in_a_transaction_that_rolls_back_sends_nothing(make_pipeline, sent_stages):
    pipeline = make_pipeline(("a", "base"), ("b", "a"))
    with pytest.raises(Abort), transaction.atomic():
        run = run_create(pipeline=pipeline, user=pipeline.created_by)
        assert run.stages.filter(status="queued").count() == 1  # queued inside the transaction...
        assert sent_stages == []  # ...but nothing sent yet
        raise Abort
    assert sent_stages == []  # rolled back: no wake-up for a row that never existed
    assert not Run.objects.exists() and not StageRun.objects.exists()


def test_the_wake_up_goes_out_after_commit_and_names_a_committed_row(make_pipeline, sent_stages):
    pipeline = make_pipeline(("a", "base"), ("b", "a"))
    with transaction.atomic():
        run = run_create(pipeline=pipeline, user=pipeline.created_by)
        assert sent_stages == []
    first = run.stages.get(index=0)
    assert sent_stages == [first.pk]  # only the ready stage, once, after commit
    assert StageRun.objects.filter(pk=sent_stages[0], status="queued").exists()
