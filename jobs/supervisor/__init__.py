"""Run one stage: claim it, start the trainer subprocess, turn its events into state.

The parts, one file each:

    stage.py      the supervisor: claim -> prepare (MLflow run, inputs, spec.json) -> train -> outcome
                  -> the row, then the MLflow mirror; a gate stage's decision is applied before the
                  stage is marked succeeded
    process.py    the trainer process: `python -m trainers run spec.json` in its own process group,
                  events on stdout, stderr to trainer.log; it dies with the supervisor (trainers.deathsig)
    heartbeat.py  the lease (renewed, or found lost), progress for the live page, cancel polling, reaping
    events.py     the event stream read into the trainer's state (trainers.events decodes each line)
    sinks.py      metric points to the database (the live chart) and to MLflow (through a spool on disk)
    outcome.py    succeed / fail / cancel / retry / give up: a pure function of what is known at the end
    publish.py    outputs to MLflow, and the mirror: spec.json and trainer.log copies, run status
    dirs.py       the stage's work dir and checkpoint area: made, removed at the end, swept when orphaned
    logs.py       trainer.log lines from the supervisor, and the tail kept on the row
    retrying.py   waiting out MLflow and database outages

A trainer killed by a signal nobody here sent (OOM killer, kill -9, a host shutting down) is requeued:
the next attempt resumes from the newest complete checkpoint (the stage fails after its max attempts).
A database outage (PostgreSQL restarting) is waited out: DB writes are retried on a fresh connection
for up to REFINERY_DB_OUTAGE_SECONDS while the trainer keeps training.

The Celery process never imports torch: training happens in the subprocess, which knows nothing of
Django or MLflow (docs/stage-spec.md is the contract).
"""

from jobs.supervisor.dirs import sweep_ended_stage_dirs
from jobs.supervisor.process import CODE_ROOT
from jobs.supervisor.stage import StageSupervisor, supervise_stage

__all__ = ["CODE_ROOT", "StageSupervisor", "supervise_stage", "sweep_ended_stage_dirs"]
