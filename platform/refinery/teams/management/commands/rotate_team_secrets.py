from django.core.management.base import BaseCommand, CommandError

from refinery.teams.team_secrets import TeamSecretError, team_secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every team secret under REFINERY_SECRETS_KEY (after moving the old key to "
        "REFINERY_SECRETS_OLD_KEYS); then the old keys can be removed."
    )

    def handle(self, *args, **options):
        try:
            count = team_secrets_rotate()
        except TeamSecretError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"re-encrypted {count} team secret(s) under the current key")
