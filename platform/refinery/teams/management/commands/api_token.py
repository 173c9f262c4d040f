from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from refinery.teams.models import Team
from refinery.teams.services import api_token_create


class Command(BaseCommand):
    help = "Create an API token for a user and print it (it is shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--team", help="team name (default: the user's first team)")
        parser.add_argument("--name", default="cli", help="a label for the token")

    def handle(self, *args, username, team=None, name="cli", **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        team_obj = None
        if team:
            team_obj = Team.objects.filter(name=team).first()
            if team_obj is None:
                raise CommandError(f"no team named {team!r}")
        try:
            _, key = api_token_create(user=user, team=team_obj, name=name)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(key)
