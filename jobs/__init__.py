"""The bridge between the web side and the trainers: Celery app, tasks, supervisor."""
