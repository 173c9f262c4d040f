from __future__ import annotations

from django import forms

from refinery.notifications.kinds import DEFAULT_KINDS, SUBSCRIBABLE, EventKind
from refinery.notifications.models import Endpoint


class EndpointForm(forms.Form):
    """Shape only; the service checks the URL (SSRF guard), the addresses and the kinds."""

    type = forms.ChoiceField(
        choices=Endpoint.Type.choices, initial=Endpoint.Type.WEBHOOK, widget=forms.RadioSelect, label="Send to"
    )
    url = forms.CharField(
        max_length=2000,
        required=False,
        label="Webhook URL",
        widget=forms.URLInput(attrs={"placeholder": "https://hooks.example.com/refinery", "spellcheck": "false"}),
        help_text="JSON is POSTed here, signed with a secret shown once after you create it.",
    )
    addresses = forms.CharField(
        max_length=2000,
        required=False,
        label="Email addresses",
        widget=forms.TextInput(attrs={"placeholder": "ops@example.com, ml@example.com"}),
        help_text="For email: one or more addresses, separated by commas.",
    )
    kinds = forms.MultipleChoiceField(
        choices=[(k, EventKind(k).label) for k in SUBSCRIBABLE],
        initial=list(DEFAULT_KINDS),
        widget=forms.CheckboxSelectMultiple,
        label="Events",
    )
