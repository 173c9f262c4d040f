from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from refinery.teams.models import ApiToken, Team
from refinery.teams.services import api_token_create


class Command(BaseCommand):
    help = "Create an API token for a user and print it (it is shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--team", help="team name (default: the user's first team)")
        parser.add_argument("--name", default="cli", help="a label for the token")
        parser.add_argument(
            "--scope",
            choices=ApiToken.Scope.values,
            default=ApiToken.Scope.WRITE,
            help="read: GET only (403 on writes); write: read and write (default)",
        )
        parser.add_argument(
            "--expires",
            type=int,
            default=0,
            metavar="DAYS",
            help="days until the token stops working (default 0: never)",
        )

    def handle(self, *args, username, team=None, name="cli", scope=ApiToken.Scope.WRITE, expires=0, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        if expires < 0:
            raise CommandError("--expires takes a number of days (0: never)")
        team_obj = None
        if team:
            team_obj = Team.objects.filter(name=team).first()
            if team_obj is None:
                raise CommandError(f"no team named {team!r}")
        try:
            _, key = api_token_create(
                user=user,
                team=team_obj,
                name=name,
                scope=scope,
                expires_at=timezone.now() + timedelta(days=expires) if expires else None,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(key)
