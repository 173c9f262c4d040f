from ninja.security import HttpBearer

from refinery.teams.selectors import api_token_authenticate


class TokenAuth(HttpBearer):
    """`Authorization: Bearer rfy_...` from `python manage.py api_token <user>`; scopes to the token's team."""

    def authenticate(self, request, token: str):
        api_token = api_token_authenticate(key=token)
        if api_token is None:
            return None
        request.user = api_token.user
        request.team = api_token.team
        return api_token
