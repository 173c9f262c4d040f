from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm

from refinery.teams.models import ApiToken, Membership
from refinery.teams.tokens import allowed_expiry_days


class TeamCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="You become its owner and can invite others.")


class InvitationForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)
    email = forms.EmailField(
        required=False, help_text="Optional: who it is for (a note; the link works for anyone who has it)."
    )


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


def _expiry_choices():
    return [(str(d), "Never" if d == 0 else f"{d} days") for d in allowed_expiry_days()]


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, initial="cli", help_text="A label, e.g. the script or machine using it.")
    scope = forms.ChoiceField(
        choices=ApiToken.Scope.choices,
        initial=ApiToken.Scope.READ,
        help_text="Read-only tokens get 403 on every POST, PUT, PATCH and DELETE.",
    )
    expires_days = forms.TypedChoiceField(coerce=int, label="Expires", help_text="The token stops working then.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["expires_days"].choices = _expiry_choices()
        self.fields["expires_days"].initial = "90" if 90 in allowed_expiry_days() else _expiry_choices()[0][0]


class SignUpForm(UserCreationForm):
    """Username and password (checked by AUTH_PASSWORD_VALIDATORS), for someone with an invitation and no account."""

    class Meta(UserCreationForm.Meta):
        fields = ("username",)
