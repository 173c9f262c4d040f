"""A busy worker takes no more wake-ups off an AMQP broker (RabbitMQ) until it is free again.

Celery acks `jobs.run_stage` when the pool starts it; with prefetch, the broker then hands the
busy worker one more message, which waits unacked, in that worker, for as long as the stage
runs. RabbitMQ's consumer timeout (30 min by default) then closes the channel, and Celery stops
the worker ("Unrecoverable error: PreconditionFailed"). Celery's `worker_disable_prefetch` fixes
this for Redis only; here, for AMQP, the worker cancels its consumers as the pool fills up (before
the running message's ack frees the prefetch slot) and consumes again within a second of a task
ending, so a busy worker never holds a message. The wake-ups it does not take wait in the broker for a free worker.
"""

from __future__ import annotations

import logging

from celery import signals
from celery.worker import state
from celery.worker.request import Request

log = logging.getLogger(__name__)

_consumer = None  # the worker's consumer (MainProcess), learned from the first task it receives
_paused: list[str] = []


@signals.task_received.connect
def _remember_consumer(sender=None, **_kwargs) -> None:
    global _consumer
    _consumer = sender


def _amqp(consumer) -> bool:
    try:
        return consumer.connection.transport.driver_type == "amqp"
    except AttributeError:
        return False


def pause_if_full(*, starting: int = 1) -> bool:
    """Stop consuming when the tasks running plus `starting` fill the pool. True if it paused."""
    consumer = _consumer
    if consumer is None or _paused or not _amqp(consumer) or consumer.task_consumer is None:
        return False
    if len(state.active_requests) + starting < consumer.pool.num_processes:
        return False
    names = [queue.name for queue in consumer.task_consumer.queues]
    for name in names:
        consumer.cancel_task_queue(name)
    _paused.extend(names)
    log.info("worker busy: stopped consuming from %s until a task ends", ", ".join(names))
    return True


def resume_when_free() -> None:
    """Consume again from the queues pause_if_full() left, once the pool has a free process."""
    consumer = _consumer
    if not _paused or consumer is None or consumer.task_consumer is None:
        return
    if len(state.active_requests) >= consumer.pool.num_processes:
        return
    names = list(_paused)
    _paused.clear()
    for name in names:
        consumer.add_task_queue(name)


class PausingRequest(Request):
    """The request class of `jobs.run_stage` (runs in the worker's MainProcess)."""

    def on_accepted(self, pid, time_accepted):
        if pause_if_full():  # before super() acks the message and the broker may send the next one
            _watch(_consumer)
        super().on_accepted(pid, time_accepted)


_watching: set[int] = set()


def _watch(consumer) -> None:
    """Check every second, in the consumer's own loop, whether the pool has room again. (Celery's
    request class overrides on_success for speed, so a subclass cannot hook the task's end.)"""
    if id(consumer) not in _watching:
        _watching.add(id(consumer))
        consumer.timer.call_repeatedly(1.0, resume_when_free)
