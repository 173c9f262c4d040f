"""The chaos session's private services restart on demand, and the clients recover."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import DatabaseError, close_old_connections

from tests.chaos.services import PrivatePostgres, PrivateRedis

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


def test_orm_works_again_after_a_postgres_restart():
    User.objects.create_user("before-restart")

    seconds = PrivatePostgres.from_env().restart()

    with pytest.raises(DatabaseError):  # the open connection died with its backend
        User.objects.count()
    close_old_connections()  # what Django does at the end of every request (and Celery per task)
    assert User.objects.get(username="before-restart")
    print(f"PostgreSQL restart: {seconds:.2f}s")


def test_redis_answers_again_after_a_restart():
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=1, socket_timeout=5)
    assert client.ping()

    seconds = PrivateRedis.from_env().restart()

    assert client.ping()  # the pool notices the closed connection and reconnects
    print(f"Redis restart: {seconds:.2f}s")
