"""Queue and task names. They are the contract between the web side, which sends tasks, and the workers here;
they live in refinery.core.tasks so that the apps never import jobs/."""

from refinery.core.tasks import Queue, TaskName

__all__ = ["Queue", "TaskName"]
