"""Bad input to the web pages gets 400 (or 404), never a 500: a NUL character in a query string or a form post
(PostgreSQL stores no NUL in text; each case below answered 500 before), and a team id that is not a number."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.security.test_permission_matrix import WEB_ROUTES, _client, _web_url, world  # noqa: F401 - fixture

POSTS = {
    "pipelines:create": {"name": "a\x00", "base_model_id": "1", "stages-0-name": "a", "stages-0-method": "sft"},
    "pipelines:edit": {"name": "a\x00"},
    "runs:note-add": {"body": "hi\x00"},
    "runs:tag-remove": {"name": "t\x00"},
    "runs:tag-add": {"name\x00": "t"},
}
GETS = {
    "runs:list": {"tag": "a\x00"},
    "registry:promote": {"run": "1", "stage": "s\x00"},
}


@pytest.mark.parametrize("key", POSTS)
def test_a_nul_character_in_a_form_post_is_refused(world, db, key):
    url = _web_url(key, WEB_ROUTES[key], world)
    client = _client(world, "member")
    response = client.post(url, urlencode(POSTS[key]), content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400, response.content[:300]
    assert "contains a NUL character" in response.content.decode()
    # The same fields as multipart (not read before the view): the database refuses them, still a 400 (tag-add
    # reads no field named "name\x00", and answers as for an empty tag name).
    response = client.post(url, POSTS[key])
    if key == "runs:tag-add":
        assert response.status_code == 302
    else:
        assert response.status_code == 400, response.content[:300]
        assert "cannot be stored" in response.content.decode()


@pytest.mark.parametrize("key", GETS)
def test_a_nul_character_in_a_query_string_is_refused(world, db, key):
    response = _client(world, "member").get(_web_url(key, WEB_ROUTES[key], world), GETS[key])
    assert response.status_code == 400, response.content[:300]
    assert "contains a NUL character" in response.content.decode()


def test_the_api_keeps_its_own_validation_and_uploads_are_not_parsed_early(world, db):
    """/api/ answers in its own shape (422 naming the field), and a multipart upload page is left to its view."""
    response = _client(world, "member").get(
        "/api/v1/runs", {"status": "a\x00"}, headers={"Authorization": f"Bearer {world.tokens['member']}"}
    )
    assert response.status_code == 422 and "NUL" in response.json()["detail"][0]["msg"]
    upload = _client(world, "member").post("/datasets/upload/", {"name": "a\x00", "kind": "prompt_completion"})
    assert upload.status_code == 400 and b"Null characters are not allowed" in upload.content


@pytest.mark.parametrize("value", ["abc", "1.5", "\x00", ""])
def test_switching_to_a_team_that_is_not_a_number_is_404(world, db, value):
    response = _client(world, "member").post("/teams/switch/", {"team": value})
    assert response.status_code in (400, 404), response.status_code
