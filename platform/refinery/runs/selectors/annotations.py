"""Reads of runs' notes and tags: a run's panel and what the user may do in it."""

from __future__ import annotations

from dataclasses import dataclass

from refinery.runs.models import Run, RunNote, RunTag
from refinery.teams.models import Membership, Team
from refinery.teams.selectors import membership_get


@dataclass
class RunAnnotations:
    run: Run
    notes: list[RunNote]  # each with `user_may_delete`
    tags: list[RunTag]
    team_tags: list[str]  # the tag names used in the team, for suggestions
    can_write: bool


def annotated_run_get(*, team: Team, number: int) -> Run:
    """The team's run number `number`, with its team (what the notes and tags views need of it)."""
    return Run.objects.select_related("team").defer("snapshot").get(team=team, number=number)


def run_annotations(*, run: Run, user) -> RunAnnotations:
    """A run's notes (oldest first, with their authors), its tags, the team's tag names and what `user` may do:
    four queries."""
    membership = membership_get(team=run.team, user=user)
    notes = list(RunNote.objects.filter(run=run).select_related("author"))
    for note in notes:
        note.user_may_delete = bool(
            membership
            and membership.can_write
            and (membership.role == Membership.Role.OWNER or note.author_id == user.pk)
        )
    return RunAnnotations(
        run=run,
        notes=notes,
        tags=list(RunTag.objects.filter(run=run)),
        team_tags=list(
            RunTag.objects.filter(team=run.team).order_by("name").values_list("name", flat=True).distinct()[:200]
        ),
        can_write=bool(membership and membership.can_write),
    )


def run_note_get(*, run: Run, pk: int) -> RunNote:
    """A note of `run` (a run already scoped to the team)."""
    note = RunNote.objects.select_related("author").get(run=run, pk=pk)
    note.run = run
    return note
