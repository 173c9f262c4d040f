"""The outcome of a trainer that has exited: a pure function of what is known at that point.

give up   the lease was lost (and no cancel asked for): another attempt owns the stage
succeed   the trainer said `finished` and exited 0 (the outputs are uploaded next)
fail      hung (stalled), over its team's budget, `failed`, or died of anything not below
cancel    a cancel was requested (whatever the trainer did after SIGTERM)
retry     stopped from outside without a word: SIGTERM nobody here sent (a host shutting
          down), or killed by SIGKILL/SIGTERM/SIGHUP/SIGINT (the OOM killer, kill -9); the
          next attempt resumes from the newest complete checkpoint
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import Enum

from trainers.events import Canceled, Failed, Finished

from jobs.supervisor.process import EXIT_CANCELED
from jobs.supervisor.retrying import one_line

# A trainer killed by one of these, without saying why, is retried (the next attempt resumes): the
# kernel's OOM killer, kill -9, a host shutting down. Anything else it dies of fails the stage.
RETRY_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Action(str, Enum):
    GIVE_UP = "give up"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"
    RETRY = "retry"


@dataclass(frozen=True)
class Outcome:
    action: Action
    message: str = ""  # the error (fail, cancel) or the reason (retry)


def stage_outcome(
    *,
    returncode: int | None,
    last_event: Finished | Failed | Canceled | None,
    cancel_requested: bool,
    lease_lost: bool,
    stalled: str | None,
    over_budget: str | None,
    killed: bool = False,
    step: int = 0,
    last_log_line: str = "",
) -> Outcome:
    """What to do with the stage once its trainer has exited with `returncode` (negative: the signal that
    killed it), its last event being `last_event` (None: it sent no terminal event). `stalled` and
    `over_budget` say why the supervisor stopped it, `killed` whether it needed SIGKILL; `step` and
    `last_log_line` (of trainer.log) go into the messages."""
    rc = returncode
    if lease_lost and not cancel_requested:
        return Outcome(Action.GIVE_UP)
    if isinstance(last_event, Finished) and rc == 0:
        return Outcome(Action.SUCCEED)
    if stalled is not None and not cancel_requested:
        return Outcome(Action.FAIL, stalled)
    if over_budget is not None and not cancel_requested:
        return Outcome(Action.FAIL, over_budget)
    if cancel_requested:
        return Outcome(Action.CANCEL, "canceled" + (" (killed after the grace period)" if killed else ""))
    if isinstance(last_event, Canceled) or rc == EXIT_CANCELED:
        # Stopped by a SIGTERM nobody here sent (a host shutting down): interrupted, not canceled.
        return Outcome(Action.RETRY, f"the trainer was stopped by SIGTERM at step {step}")
    if last_event is None and rc is not None and -rc in RETRY_SIGNALS:
        reason = f"the trainer was killed by {_signal_name(-rc)} at step {step}"
        if -rc == signal.SIGKILL:
            reason += " (by the out-of-memory killer, or kill -9)"
        return Outcome(Action.RETRY, reason)
    if isinstance(last_event, Failed):
        error = last_event.error or "the trainer failed"
    elif rc is not None and rc < 0:
        error = f"the trainer was killed by {_signal_name(-rc)}"
    elif isinstance(last_event, Finished):
        error = f"the trainer reported success but exited with status {rc}"
    else:
        error = f"the trainer exited with status {rc}" + (f": {last_log_line}" if last_log_line else "")
    return Outcome(Action.FAIL, one_line(error))
