from ninja.errors import HttpError
from ninja.security import HttpBearer

from refinery.teams.models import ApiToken
from refinery.teams.selectors import api_token_authenticate

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY_TOKEN = "this API token is read-only: create a read-write token to change anything"


class TokenAuth(HttpBearer):
    """`Authorization: Bearer rfy_...` (the Tokens page, or `python manage.py api_token <user>`); scopes to the
    token's team. Unknown, revoked and expired tokens get 401; a read-scoped token gets 403 on every method
    that can write (POST/PUT/PATCH/DELETE), here, in one place, before any route runs."""

    def authenticate(self, request, token: str):
        api_token = api_token_authenticate(key=token)
        if api_token is None:
            return None
        if api_token.scope != ApiToken.Scope.WRITE and request.method not in SAFE_METHODS:
            raise HttpError(403, READ_ONLY_TOKEN)
        request.user = api_token.user
        request.team = api_token.team
        return api_token
