"""The outcome of a stage whose trainer has exited: every row of the decision table (jobs.supervisor.outcome)."""

from __future__ import annotations

import signal

import pytest
from trainers.events import Canceled, Failed, Finished

from jobs.supervisor.outcome import Action, Outcome, stage_outcome

FINISHED = Finished(outputs={"kind": "model", "path": "/x"}, summary={"train/loss": 0.1})
FAILED = Failed(error="ValueError: bad row 3", traceback="Traceback ...")
CANCELED = Canceled(step=12)
STALLED = "stalled at step 7: no event from the trainer for 31s (limit 30s)"
OVER = "over the team's budget of 60s per stage"
KILLED = -signal.SIGKILL
TERMED = -signal.SIGTERM
OOM = " (by the out-of-memory killer, or kill -9)"

# (returncode, last event, cancel requested, lease lost, stalled, over budget, killed) -> outcome; step 7,
# last log line "CUDA out of memory".
TABLE = [
    # The lease went elsewhere: whatever the trainer did, give up (unless a cancel came first).
    (0, FINISHED, False, True, None, None, False, Outcome(Action.GIVE_UP)),
    (KILLED, None, False, True, None, None, True, Outcome(Action.GIVE_UP)),
    (3, CANCELED, True, True, None, None, False, Outcome(Action.CANCEL, "canceled")),
    # Finished and exit 0 succeeds, even when a cancel or a stall came too late to matter.
    (0, FINISHED, False, False, None, None, False, Outcome(Action.SUCCEED)),
    (0, FINISHED, True, False, None, None, False, Outcome(Action.SUCCEED)),
    (0, FINISHED, False, False, STALLED, OVER, False, Outcome(Action.SUCCEED)),
    (
        1,
        FINISHED,
        False,
        False,
        None,
        None,
        False,
        Outcome(Action.FAIL, "the trainer reported success but exited with status 1"),
    ),
    # Stopped by the supervisor: stalled, then over budget, fail with their reason; a cancel wins over both.
    (KILLED, None, False, False, STALLED, None, True, Outcome(Action.FAIL, STALLED)),
    (KILLED, None, False, False, STALLED, OVER, True, Outcome(Action.FAIL, STALLED)),
    (3, CANCELED, False, False, None, OVER, False, Outcome(Action.FAIL, OVER)),
    (
        KILLED,
        None,
        True,
        False,
        STALLED,
        OVER,
        True,
        Outcome(Action.CANCEL, "canceled (killed after the grace period)"),
    ),
    (3, CANCELED, True, False, None, None, False, Outcome(Action.CANCEL, "canceled")),
    (1, FAILED, True, False, None, None, False, Outcome(Action.CANCEL, "canceled")),
    # Stopped from outside without a cancel: retried.
    (
        3,
        CANCELED,
        False,
        False,
        None,
        None,
        False,
        Outcome(Action.RETRY, "the trainer was stopped by SIGTERM at step 7"),
    ),
    (3, None, False, False, None, None, False, Outcome(Action.RETRY, "the trainer was stopped by SIGTERM at step 7")),
    (
        1,
        CANCELED,
        False,
        False,
        None,
        None,
        False,
        Outcome(Action.RETRY, "the trainer was stopped by SIGTERM at step 7"),
    ),
    (
        KILLED,
        None,
        False,
        False,
        None,
        None,
        False,
        Outcome(Action.RETRY, "the trainer was killed by SIGKILL at step 7" + OOM),
    ),
    (
        TERMED,
        None,
        False,
        False,
        None,
        None,
        False,
        Outcome(Action.RETRY, "the trainer was killed by SIGTERM at step 7"),
    ),
    (
        -signal.SIGHUP,
        None,
        False,
        False,
        None,
        None,
        False,
        Outcome(Action.RETRY, "the trainer was killed by SIGHUP at step 7"),
    ),
    (
        -signal.SIGINT,
        None,
        False,
        False,
        None,
        None,
        False,
        Outcome(Action.RETRY, "the trainer was killed by SIGINT at step 7"),
    ),
    # Everything else fails.
    (1, FAILED, False, False, None, None, False, Outcome(Action.FAIL, "ValueError: bad row 3")),
    (1, Failed(), False, False, None, None, False, Outcome(Action.FAIL, "the trainer failed")),
    (KILLED, FAILED, False, False, None, None, False, Outcome(Action.FAIL, "ValueError: bad row 3")),
    (-signal.SIGSEGV, None, False, False, None, None, False, Outcome(Action.FAIL, "the trainer was killed by SIGSEGV")),
    (
        -signal.SIGABRT,
        FINISHED,
        False,
        False,
        None,
        None,
        False,
        Outcome(Action.FAIL, "the trainer was killed by SIGABRT"),
    ),
    (
        -signal.SIGKILL,
        FINISHED,
        False,
        False,
        None,
        None,
        False,
        Outcome(Action.FAIL, "the trainer was killed by SIGKILL"),
    ),
    (-50, None, False, False, None, None, False, Outcome(Action.FAIL, "the trainer was killed by signal 50")),
    (
        2,
        None,
        False,
        False,
        None,
        None,
        False,
        Outcome(Action.FAIL, "the trainer exited with status 2: CUDA out of memory"),
    ),
    (
        0,
        None,
        False,
        False,
        None,
        None,
        False,
        Outcome(Action.FAIL, "the trainer exited with status 0: CUDA out of memory"),
    ),
]


@pytest.mark.parametrize("rc, last, cancel, lease_lost, stalled, over_budget, killed, expected", TABLE)
def test_outcome_table(rc, last, cancel, lease_lost, stalled, over_budget, killed, expected):
    assert (
        stage_outcome(
            returncode=rc,
            last_event=last,
            cancel_requested=cancel,
            lease_lost=lease_lost,
            stalled=stalled,
            over_budget=over_budget,
            killed=killed,
            step=7,
            last_log_line="CUDA out of memory",
        )
        == expected
    )


def test_a_failure_is_one_line_and_the_exit_status_alone_when_the_log_is_empty():
    long = Failed(error="boom\n" + "x" * 1000)
    outcome = stage_outcome(
        returncode=1, last_event=long, cancel_requested=False, lease_lost=False, stalled=None, over_budget=None
    )
    assert outcome.action is Action.FAIL and "\n" not in outcome.message and len(outcome.message) == 500
    assert stage_outcome(
        returncode=2, last_event=None, cancel_requested=False, lease_lost=False, stalled=None, over_budget=None
    ) == Outcome(Action.FAIL, "the trainer exited with status 2")
