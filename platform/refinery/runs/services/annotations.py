"""Notes and tags on runs (the writes; refinery.runs.selectors.annotations reads them): what people in the team write about a run, and labels to find it again.

Any member who may write in the team (owners and members, not viewers) adds notes and tags; a note is
deleted by its author or a team owner, a tag removed by any writer. Removals are audited.
"""

from __future__ import annotations

import re

from django.db import IntegrityError, transaction

from refinery.runs.models import Run, RunNote, RunTag
from refinery.teams.models import Membership, Team
from refinery.teams.selectors import membership_get
from refinery.teams.services import audit

TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._:+-]*$")


class AnnotationError(Exception):
    """A note or tag cannot be written as asked; the message says why."""


def _writer(*, team: Team, user) -> Membership:
    membership = membership_get(team=team, user=user)
    if membership is None or not membership.can_write:
        raise AnnotationError("viewers cannot change anything in this team")
    return membership


def tag_normalize(name: str) -> str:
    """ "Paper V2 " -> "paper-v2"; raises AnnotationError for what cannot be a tag."""
    tag = "-".join(name.strip().lower().split())
    if not tag:
        raise AnnotationError("a tag needs a name")
    if len(tag) > RunTag.MAX_LENGTH:
        raise AnnotationError(f"a tag has at most {RunTag.MAX_LENGTH} characters")
    if not TAG_RE.match(tag):
        raise AnnotationError("a tag is letters, digits and . _ : + - (starting with a letter or digit)")
    return tag


@transaction.atomic
def run_note_add(*, run: Run, user, body: str) -> RunNote:
    _writer(team=run.team, user=user)
    body = body.strip()
    if not body:
        raise AnnotationError("a note cannot be empty")
    if len(body) > RunNote.MAX_LENGTH:
        raise AnnotationError(f"a note has at most {RunNote.MAX_LENGTH} characters")
    return RunNote.objects.create(run=run, author=user, body=body)


@transaction.atomic
def run_note_delete(*, note: RunNote, user) -> None:
    membership = _writer(team=note.run.team, user=user)
    if note.author_id != user.pk and membership.role != Membership.Role.OWNER:
        raise AnnotationError("only its author or a team owner can delete a note")
    audit(
        team=note.run.team,
        user=user,
        action="run.note_deleted",
        target=f"run #{note.run.number}",
        author=note.author.username if note.author else None,
        body=note.body[:200],
    )
    note.delete()


@transaction.atomic
def run_tag_add(*, run: Run, user, name: str) -> RunTag:
    """Tag a run (normalized name); tagging it again with the same name changes nothing."""
    _writer(team=run.team, user=user)
    tag = tag_normalize(name)
    existing = RunTag.objects.filter(run=run, name=tag).first()
    if existing:
        return existing
    try:
        with transaction.atomic():
            return RunTag.objects.create(team_id=run.team_id, run=run, name=tag, created_by=user)
    except IntegrityError:  # the same tag added at the same moment by someone else
        return RunTag.objects.get(run=run, name=tag)


@transaction.atomic
def run_tag_remove(*, run: Run, user, name: str) -> bool:
    """Remove a tag from a run; False when the run did not have it."""
    _writer(team=run.team, user=user)
    deleted, _ = RunTag.objects.filter(run=run, name=name.strip().lower()).delete()
    if deleted:
        audit(team=run.team, user=user, action="run.tag_removed", target=f"run #{run.number}", tag=name)
    return bool(deleted)
