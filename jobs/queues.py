from enum import StrEnum


class Queue(StrEnum):
    GPU = "gpu"  # training stages: concurrency 1 per GPU, prefetch 1
    CPU = "cpu"  # light work: reaper, validation, schedule triggers


class TaskName(StrEnum):
    RUN_STAGE = "jobs.run_stage"
    REAP_STAGES = "jobs.reap_stages"
    DELIVER_NOTIFICATIONS = "jobs.deliver_notifications"
    SCHEDULES_TICK = "jobs.schedules_tick"
