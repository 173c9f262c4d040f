"""Notification outbox and delivery log.

`NotificationEvent` is the outbox: written by `notify` in the same transaction as the state change it
reports, so a rolled-back change leaves no event. `Endpoint` is where a team's events go (a signed webhook,
or email addresses). `Delivery` is one attempt to send one event to one endpoint: the delivery log; a retry
or a redelivery is a new row (attempt + 1), due at `next_attempt_at`."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from refinery.notifications.kinds import EventKind
from refinery.teams.models import Team


class NotificationEvent(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="notification_events")
    kind = models.CharField(max_length=40, choices=EventKind.choices)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


class Endpoint(models.Model):
    class Type(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        EMAIL = "email", "Email"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="notification_endpoints")
    type = models.CharField(max_length=16, choices=Type.choices, default=Type.WEBHOOK)
    url = models.URLField(max_length=2000, blank=True, help_text="webhook: where the JSON is POSTed")
    addresses = models.JSONField(default=list, blank=True, help_text="email: the recipients")
    secret_ciphertext = models.TextField(blank=True, help_text="webhook: Fernet token of the signing secret")
    secret_last4 = models.CharField(max_length=4, blank=True)
    kinds = models.JSONField(default=list, help_text="the event kinds this endpoint receives")
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.target

    @property
    def target(self) -> str:
        return self.url if self.type == self.Type.WEBHOOK else ", ".join(self.addresses)


class Delivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Delivered"
        FAILED = "failed", "Failed"

    event = models.ForeignKey(NotificationEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveIntegerField(default=1)
    manual = models.BooleanField(default=False, help_text="a redelivery someone asked for")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    response_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="when a pending attempt is due")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True, help_text="when the attempt was made")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]

    def __str__(self) -> str:
        return f"delivery #{self.pk} ({self.event.kind} attempt {self.attempt})"
