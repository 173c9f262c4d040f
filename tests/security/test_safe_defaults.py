"""Safe defaults: DEBUG off unless switched on, friendly error pages that reveal
nothing, production settings that refuse a missing or weak secret key and pass
`check --deploy` with no warnings, a Content Security Policy without inline script or eval,
an offline API docs page, and sign-in throttling with Django's password validators."""

from __future__ import annotations

import io
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from contextlib import redirect_stdout
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, SuspiciousOperation, ValidationError
from django.http import HttpResponse
from django.template import loader
from django.test import Client
from django.urls import include, path, reverse

from refinery.core.management.commands.runstack import Command as RunstackCommand
from refinery.teams.services import api_token_create, user_create
from tests.conftest import REPO_ROOT

TEMPLATES = REPO_ROOT / "templates"
# What a DEBUG page (technical 404/500) shows and a friendly page must not.
LEAKS = [
    "URLconf",
    "Traceback",
    "refinery.urls",
    "SECRET_KEY",
    "settings",
    "DEBUG",
    "Request Method",
    "ZeroDivisionError",
    "site-packages",
    "urlpatterns",
]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REFINERY_SECURE"))}
    env.update({"PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)])})
    env.update(extra)
    return env


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


# ------------------------------------------------------------------------------ test-only views
def _boom(request):
    return 1 // 0


def _forbidden(request):
    raise PermissionDenied("secret reason")


def _bad(request):
    raise SuspiciousOperation("secret reason")


def _ok(request):
    return HttpResponse("ok")


urlpatterns = [
    path("boom/", _boom),
    path("forbidden/", _forbidden),
    path("bad/", _bad),
    path("ok/", _ok),
    path("", include("refinery.urls")),
]


# ------------------------------------------------------------------------------------- DEBUG
def test_debug_is_off_unless_switched_on(tmp_path):
    code = "import refinery.settings.base as s; print(s.DEBUG)"
    assert _python(code, _clean_env(REFINERY_VAR_DIR=str(tmp_path))).stdout.strip() == "False"
    assert _python(code, _clean_env(REFINERY_VAR_DIR=str(tmp_path), DJANGO_DEBUG="true")).stdout.strip() == "True"
    assert _python(code, _clean_env(REFINERY_VAR_DIR=str(tmp_path), DJANGO_DEBUG="0")).stdout.strip() == "False"


def test_embedded_default_serves_static_files_and_the_api_docs_with_debug_off(tmp_path):
    """`make run`'s settings (base, DEBUG off, no collectstatic): WhiteNoise serves the app's
    static files and the vendored Swagger UI from their folders."""
    code = """
import django, os
django.setup()
from django.conf import settings
from django.test import Client
c = Client(HTTP_HOST="127.0.0.1")
print(settings.DEBUG)
for url in ["/static/css/app.css", "/static/js/app.js", "/static/vendor/htmx.min.js",
            "/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/js/api-docs.js", "/static/no-such.css"]:
    r = c.get(url)
    print(url, r.status_code)
    if hasattr(r, "close"): r.close()
"""
    env = _clean_env(
        DJANGO_SETTINGS_MODULE="refinery.settings.base",
        REFINERY_VAR_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )
    out = _python(code, env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0] == "False"
    assert "/static/css/app.css 200" in lines and "/static/vendor/swagger-ui/swagger-ui-bundle.js 200" in lines
    assert "/static/js/app.js 200" in lines and "/static/js/api-docs.js 200" in lines
    assert "/static/no-such.css 404" in lines


# ------------------------------------------------------------------------------- error pages
def _assert_friendly(response, status: int, text: str) -> str:
    assert response.status_code == status
    html = response.content.decode()
    assert text in html
    assert 'data-testid="error-page"' in html
    for leak in LEAKS:
        assert leak not in html, leak
    return html


@pytest.mark.django_db
def test_unknown_url_gives_the_friendly_404_without_urlconf_or_settings(client, settings):
    assert settings.DEBUG is False
    html = _assert_friendly(client.get("/no/such/page/"), 404, "Page not found")
    assert "/no/such/page/" not in html  # not even the path that failed
    assert "app.css" in html  # in the app's look

    user_create(username="ada", password="pw-ada-123", team_name="Ada")
    client.force_login(get_user_model().objects.get(username="ada"))
    html = _assert_friendly(client.get("/runs/999999/"), 404, "Page not found")
    assert "Go to your runs" in html and 'class="sidebar"' in html


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_a_view_that_raises_gives_the_standalone_500_page(settings):
    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    assert client.get("/ok/").status_code == 200
    html = _assert_friendly(client.get("/boom/"), 500, "Something went wrong")
    assert "<script" not in html and "<style" not in html  # nothing the CSP would block, no nonce needed
    assert 'href="/static/css/app.css"' in html


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_403_and_400_pages_are_friendly(client):
    html = _assert_friendly(client.get("/forbidden/"), 403, "You can't do that here")
    assert "secret reason" not in html
    html = _assert_friendly(client.get("/bad/"), 400, "could not be understood")
    assert "secret reason" not in html


def test_the_500_template_renders_with_no_context_and_no_database():
    # No db fixture: any query fails this test. Django renders 500.html with an empty context.
    html = loader.get_template("500.html").render()
    assert "Something went wrong" in html and "{%" not in html


# ------------------------------------------------------------------------ production settings
DOCUMENTED_DEPLOYMENT = {
    "DJANGO_SETTINGS_MODULE": "refinery.settings.production",
    "DJANGO_ALLOWED_HOSTS": "refinery.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://refinery.example.com",
    "DATABASE_URL": "postgres://refinery@db.internal:5432/refinery",
    "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
    "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
    "REFINERY_SECRETS_KEY": secrets.token_urlsafe(48),  # team secrets' own key (teams.E001)
}


def _deploy_check(tmp_path, **env: str) -> subprocess.CompletedProcess:
    full = _clean_env(REFINERY_VAR_DIR=str(tmp_path), **{**DOCUMENTED_DEPLOYMENT, **env})
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy_with_no_warnings(tmp_path):
    out = _deploy_check(tmp_path, DJANGO_SECRET_KEY=secrets.token_urlsafe(50))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNINGS" not in out.stdout + out.stderr
    assert "System check identified no issues (0 silenced)." in out.stdout


def test_production_settings_with_tls_switches_off_still_pass_and_say_what_they_silenced(tmp_path):
    out = _deploy_check(
        tmp_path,
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_SECURE_HSTS_PRELOAD="false",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNINGS" not in out.stdout + out.stderr
    assert "(2 silenced)" in out.stdout


@pytest.mark.parametrize(
    "key, message",
    [
        (None, "DJANGO_SECRET_KEY is not set"),
        ("", "DJANGO_SECRET_KEY is not set"),
        ("refinery-insecure-dev-key-change-me", "insecure development key"),
        ("django-insecure-" + "x" * 60, "insecure development key"),
        ("short-but-random-Q3k9", "too weak"),
        ("a" * 64, "too weak"),
    ],
)
def test_production_settings_refuse_a_missing_or_weak_secret_key(tmp_path, key, message):
    env = {} if key is None else {"DJANGO_SECRET_KEY": key}
    out = _deploy_check(tmp_path, **env)
    assert out.returncode != 0
    assert "ImproperlyConfigured" in out.stderr and message in out.stderr
    assert "KeyError" not in out.stderr


def test_production_responses_redirect_to_https_and_send_hsts_and_secure_cookies(tmp_path):
    code = """
import django
django.setup()
from django.test import Client
c = Client(HTTP_HOST="refinery.example.com")
r = c.get("/login/")
print("plain", r.status_code, r.get("Location"))
r = c.get("/login/", HTTP_X_FORWARDED_PROTO="https")
print("https", r.status_code)
print("hsts", r.get("Strict-Transport-Security"))
print("xfo", r.get("X-Frame-Options"))
print("nosniff", r.get("X-Content-Type-Options"))
print("referrer", r.get("Referrer-Policy"))
print("csp", r.get("Content-Security-Policy"))
print("csrf-cookie-secure", r.cookies["csrftoken"]["secure"])
print("csrf-cookie-httponly", r.cookies["csrftoken"]["httponly"])
"""
    env = _clean_env(
        REFINERY_VAR_DIR=str(tmp_path),
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        **{**DOCUMENTED_DEPLOYMENT, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"},
    )
    # The manifest storage needs collected static files, as a real deployment has them.
    collect = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=REPO_ROOT,
        env={**env, "REFINERY_STATIC_ROOT": str(tmp_path / "static")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collect.returncode == 0, collect.stderr[-3000:]
    out = _python(code, {**env, "REFINERY_STATIC_ROOT": str(tmp_path / "static")})
    assert out.returncode == 0, out.stderr[-3000:]
    got = dict(line.split(" ", 1) for line in out.stdout.strip().split("\n"))
    assert got["plain"] == "301 https://refinery.example.com/login/"
    assert got["https"] == "200"
    assert got["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert got["xfo"] == "DENY" and got["nosniff"] == "nosniff" and got["referrer"] == "same-origin"
    assert "frame-ancestors 'none'" in got["csp"]
    assert got["csrf-cookie-secure"] == "True" and got["csrf-cookie-httponly"] == "True"


def test_plain_http_trial_is_possible_but_check_deploy_says_it_is_no_deployment(tmp_path):
    """docker-compose.yml's local trial (DJANGO_HTTPS=false on 127.0.0.1): no redirect, no Secure
    cookies, and `check --deploy` warns about exactly that."""
    key = secrets.token_urlsafe(50)
    out = _deploy_check(tmp_path, DJANGO_SECRET_KEY=key, DJANGO_HTTPS="false")
    assert out.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in out.stderr, out.stderr
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS)"
    )
    env = _clean_env(
        REFINERY_VAR_DIR=str(tmp_path), DJANGO_SECRET_KEY=key, DJANGO_HTTPS="false", **DOCUMENTED_DEPLOYMENT
    )
    assert _python(code, env).stdout.split() == ["False", "False", "False", "0"]


# ------------------------------------------------------------------ Content Security Policy
def _csp(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


@pytest.mark.django_db
def test_pages_send_a_strict_csp_whose_nonce_their_scripts_carry(client):
    response = client.get(reverse("login"))
    policy = _csp(response)
    nonces = [s for s in policy["script-src"] if s.startswith("'nonce-")]
    assert policy["default-src"] == ["'self'"] and len(nonces) == 1
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
    assert policy["style-src"] == ["'self'"] and policy["style-src-attr"] == ["'unsafe-inline'"]
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
    assert policy["form-action"] == ["'self'"] and policy["base-uri"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"] and policy["img-src"] == ["'self'", "data:"]
    html = response.content.decode()
    nonce = nonces[0][len("'nonce-") : -1]
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all(f'nonce="{nonce}"' in tag for tag in scripts), scripts
    assert '"allowEval":false' in html and '"includeIndicatorStyles":false' in html
    # A fresh nonce per response.
    assert _csp(client.get(reverse("login")))["script-src"] != policy["script-src"]


def _template_files():
    return sorted(p for p in TEMPLATES.rglob("*.html"))


def test_templates_have_no_inline_handlers_unnonced_scripts_or_htmx_eval():
    """What the CSP would block (and what a browser test only finds on the pages it visits)."""
    problems = []
    for file in _template_files():
        text = file.read_text()
        rel = file.relative_to(REPO_ROOT)
        for match in re.finditer(r"<script\b[^>]*>", text):
            tag = match.group(0)
            if "src=" not in tag and "application/json" not in tag and "request.csp_nonce" not in tag:
                problems.append(f"{rel}: inline script without the nonce: {tag}")
        for match in re.finditer(r"<[a-zA-Z][^>]*?\son[a-z]+\s*=", text):
            problems.append(f"{rel}: inline event handler: {match.group(0)[:80]}")
        if re.search(r"javascript:", text):
            problems.append(f"{rel}: javascript: URL")
        for match in re.finditer(r"hx-(?:vals|headers)\s*=\s*['\"]\s*(?:js|javascript):", text):
            problems.append(f"{rel}: htmx evaluates code: {match.group(0)}")
        for match in re.finditer(r"hx-trigger\s*=\s*\"[^\"]*\[[^\"]*\"", text):
            problems.append(f"{rel}: htmx trigger filter (evaluated code): {match.group(0)}")
        if re.search(r"\shx-on[:-]", text):
            problems.append(f"{rel}: hx-on (evaluated code)")
    assert not problems, "\n".join(problems)


def test_static_js_adds_no_inline_handlers_or_eval():
    for file in (REPO_ROOT / "static" / "js").glob("*.js"):
        text = file.read_text()
        assert not re.search(r"\beval\(|new Function\(|setAttribute\(\s*['\"]on[a-z]+", text), file
        assert not re.search(r"""['"<]\s*[^'"]*\son[a-z]+=\\?["']""", text), file


# ------------------------------------------------------------------------------ API docs
@pytest.mark.django_db
def test_api_docs_page_uses_the_vendored_swagger_ui_and_no_other_site(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in html
    assert "/static/vendor/swagger-ui/swagger-ui.css" in html and "/static/js/api-docs.js" in html
    urls = re.findall(r"https?://[^\s\"'<>)]+", html)
    outside = [u for u in urls if not re.match(r"https?://testserver(/|$)", u)]
    assert not outside, outside
    assert "cdn" not in html.lower()
    nonce = next(s for s in _csp(response)["script-src"] if s.startswith("'nonce-"))[len("'nonce-") : -1]
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'type="application/json"' in tag or f'nonce="{nonce}"' in tag, tag
    assert '"validatorUrl": null' in html  # Swagger UI would ask validator.swagger.io otherwise


def test_vendored_swagger_ui_is_recorded_and_complete():
    vendor = REPO_ROOT / "static" / "vendor"
    bundle = (vendor / "swagger-ui" / "swagger-ui-bundle.js").read_text()
    assert len(bundle) > 500_000 and "SwaggerUIBundle" in bundle
    assert "sourceMappingURL" not in bundle  # collectstatic's manifest would look for the map
    assert "sourceMappingURL" not in (vendor / "swagger-ui" / "swagger-ui.css").read_text()
    versions = (vendor / "VERSIONS.txt").read_text()
    assert (
        "swagger-ui-dist 5.35.0" in versions
        and '"swagger-ui-dist": "5.35.0"' in (REPO_ROOT / "package.json").read_text()
    )


# ------------------------------------------------------------------------- sign-in throttling
def _sign_in(client: Client, username: str, password: str):
    return client.post(reverse("login"), {"username": username, "password": password})


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.django_db
def test_the_11th_sign_in_in_a_minute_is_refused_even_with_the_right_password(settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=2)
    user_create(username="ada", password="correct-horse-battery", team_name="Ada")
    user_create(username="bea", password="bea-staple-battery", team_name="Bea")
    attacker = Client()
    started = time.monotonic()
    for attempt in range(9):
        response = _sign_in(attacker, "ada", f"wrong-{attempt}")
        assert (
            response.status_code == 200 and "Please enter a correct username and password" in response.content.decode()
        )
    # The 10th wrong password locks the username out from this address...
    _assert_friendly(_sign_in(attacker, "ada", "wrong-9"), 429, "Too many failed sign-ins")
    # ... so the 11th attempt is refused even with the right password.
    response = _sign_in(attacker, "ada", "correct-horse-battery")
    assert time.monotonic() - started < 60
    html = _assert_friendly(response, 429, "Too many failed sign-ins")
    assert "After 10 wrong passwords" in html
    assert not _signed_in(attacker)

    # Another user from the same address is not locked out.
    other = Client()
    assert _sign_in(other, "bea", "bea-staple-battery").status_code == 302 and _signed_in(other)

    # API tokens are not passwords: the locked-out user's token still works.
    ada = get_user_model().objects.get(username="ada")
    _, key = api_token_create(user=ada)
    assert Client().get("/api/v1/runs", headers={"Authorization": f"Bearer {key}"}).status_code == 200

    # After the cool-off (each refused attempt restarts it) the right password works again.
    time.sleep(2.2)
    response = _sign_in(attacker, "ada", "correct-horse-battery")
    assert response.status_code == 302 and _signed_in(attacker)


@pytest.mark.django_db
def test_a_successful_sign_in_resets_the_count():
    user_create(username="ada", password="correct-horse-battery", team_name="Ada")
    for _ in range(2):
        client = Client()
        for attempt in range(9):
            assert _sign_in(client, "ada", f"wrong-{attempt}").status_code == 200
        assert _sign_in(client, "ada", "correct-horse-battery").status_code == 302 and _signed_in(client)


@pytest.mark.django_db
def test_behind_a_proxy_the_throttle_counts_the_real_client_not_the_proxy(settings):
    settings.REFINERY_TRUSTED_PROXY_COUNT = 1
    user_create(username="ada", password="correct-horse-battery", team_name="Ada")
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    attacker = Client(**proxy, HTTP_X_FORWARDED_FOR="203.0.113.7")
    for attempt in range(10):
        attacker.post(reverse("login"), {"username": "ada", "password": f"wrong-{attempt}"})
    assert _sign_in(attacker, "ada", "correct-horse-battery").status_code == 429
    # A forged left-most entry does not move the attacker elsewhere...
    forged = Client(**proxy, HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.7")
    assert _sign_in(forged, "ada", "correct-horse-battery").status_code == 429
    # ... while ada, from her own address through the same proxy, signs in.
    ada = Client(**proxy, HTTP_X_FORWARDED_FOR="192.0.2.44")
    assert _sign_in(ada, "ada", "correct-horse-battery").status_code == 302 and _signed_in(ada)


def test_throttling_settings_are_ten_failures_per_username_and_address(settings):
    assert settings.AXES_ENABLED and settings.AXES_FAILURE_LIMIT == 10
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert settings.AXES_RESET_ON_SUCCESS
    assert settings.AUTHENTICATION_BACKENDS[-1] == "django.contrib.auth.backends.ModelBackend"
    from axes.backends import AxesStandaloneBackend
    from django.utils.module_loading import import_string

    assert issubclass(import_string(settings.AUTHENTICATION_BACKENDS[0]), AxesStandaloneBackend)


def test_base_settings_put_the_stock_axes_backend_first(tmp_path):
    code = "import refinery.settings.base as s; print(s.AUTHENTICATION_BACKENDS[0]); print(s.MIDDLEWARE[-1])"
    out = _python(code, _clean_env(REFINERY_VAR_DIR=str(tmp_path)))
    assert out.stdout.split() == ["axes.backends.AxesStandaloneBackend", "axes.middleware.AxesMiddleware"]


def test_all_four_standard_password_validators_and_the_demo_password_passes_them(settings):
    names = [v["NAME"].rsplit(".", 1)[-1] for v in settings.AUTH_PASSWORD_VALIDATORS]
    assert names == [
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    ]
    demo = get_user_model()(username="demo")
    validate_password("refinery-demo", user=demo)  # the demo password `make run` prints
    for weak in ["password", "84736251", "short"]:  # common, numeric, too short
        with pytest.raises(ValidationError):
            validate_password(weak, user=demo)
    with pytest.raises(ValidationError, match="too similar"):
        validate_password("refinery-admin1", user=get_user_model()(username="refinery-admin"))


# ------------------------------------------------------------------------------ make run
def _banner(debug: bool, settings) -> str:
    settings.DEBUG = debug
    command = RunstackCommand()
    command.print_lock = threading.Lock()
    command.console_broken = False
    command.logs = Path("/tmp/refinery-logs")
    out = io.StringIO()
    with redirect_stdout(out):
        command._banner(8000, "http://127.0.0.1:5000", False, False)
    return out.getvalue()


def test_make_run_banner_says_which_mode_is_on(settings):
    off = _banner(False, settings)
    assert "DEBUG off" in off and "make run DEV=1" in off and "development mode: DEBUG on" not in off
    on = _banner(True, settings)
    assert "development mode: DEBUG on" in on


def test_make_run_turns_on_development_mode_only_when_asked():
    # Under `make test` the parent make's flags would make this one print "Entering/Leaving directory".
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}

    def dry_run(*args: str) -> str:
        return subprocess.run(
            ["make", "--no-print-directory", "-n", "run", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout

    dry = dry_run()
    assert "DJANGO_DEBUG" not in dry.strip().split("\n")[-1]
    dev = dry_run("DEV=1")
    assert dev.strip().split("\n")[-1].startswith("DJANGO_DEBUG=true ")
