"""The checks of `make docker-test`, against the compose stack that scripts/docker_test.sh built and started.

Standard library only (it runs on the host's python3, before or without .venv). As a user would:

  1. the login page answers on the published port; /healthz and /readyz answer; no other port of the
     stack is published (PostgreSQL, Redis and MLflow stay on the compose network);
  2. migrations ran (the migrate job exited 0 and `migrate --check` finds nothing left);
  3. the demo user (seed_demo, run in the worker image: the demo kit needs torch) signs in through the
     login form;
  4. a small SFT run (one stage, a few steps, the demo model and data) goes through the CPU worker and
     MLflow to "succeeded", and its artifacts list and download through the web;
  5. the web image has no torch and runs as a non-root user;
  6. `compose down` then `up` keeps the data: the user, the run and its artifacts are still there;
  7. `compose stop` stops every container within its grace period (none is killed).

    python3 tests/docker/check_stack.py --url http://127.0.0.1:PORT --compose 'docker-compose -p ... -f ... -f ...'

Each step prints one line with its time; the first failure raises with the evidence.
"""

from __future__ import annotations

import argparse
import html
import http.cookiejar
import json
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DEMO_USER, DEMO_PASSWORD = "demo", "refinery-demo"  # refinery.core.management.commands.seed_demo
STEPS = 12  # the SFT stage's max_steps: enough for a checkpoint-free, seconds-long run on the CPU


class CheckFailed(AssertionError):
    pass


def check(condition, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class Stack:
    def __init__(self, url: str, compose: str):
        self.url = url.rstrip("/")
        self.compose = shlex.split(compose)
        self.cookies = http.cookiejar.CookieJar()
        self.browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect)
        self.token = ""

    # --- compose and docker ---------------------------------------------------------------------------
    def run(self, *args: str, timeout: float = 600, check_rc: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
        if check_rc and result.returncode != 0:
            raise CheckFailed(
                f"{shlex.join(args)} exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        return result

    def dc(self, *args: str, timeout: float = 600, check_rc: bool = True) -> subprocess.CompletedProcess:
        return self.run(*self.compose, *args, timeout=timeout, check_rc=check_rc)

    def containers(self, all_: bool = False) -> dict[str, dict]:
        """Every container of the project, by service name (inspect output)."""
        ids = self.dc("ps", "-q", *(["-a"] if all_ else [])).stdout.split()
        if not ids:
            return {}
        info = json.loads(self.run("docker", "inspect", *ids).stdout)
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in info}

    def wait_healthy(self, services: list[str], timeout: float = 420) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = {}
            for name, c in self.containers(all_=True).items():
                health = (c["State"].get("Health") or {}).get("Status")
                states[name] = health or c["State"]["Status"]
            if all(states.get(s) == "healthy" for s in services):
                return
            bad = {s: v for s, v in states.items() if v in ("unhealthy", "exited", "dead") and s != "migrate"}
            if states.get("migrate") == "exited":
                code = self.containers(all_=True)["migrate"]["State"]["ExitCode"]
                check(code == 0, f"the migrate job exited {code}:\n{self.dc('logs', '--tail=40', 'migrate').stdout}")
            check(not bad, f"services failed to start: {bad}\n{self.dc('logs', '--tail=40', *bad).stdout}")
            check(time.monotonic() < deadline, f"not healthy within {timeout:.0f}s: {states}")
            time.sleep(3)

    # --- HTTP -----------------------------------------------------------------------------------------
    def http(
        self,
        path: str,
        *,
        data: dict | None = None,
        headers: dict | None = None,
        method: str | None = None,
        browser: bool = True,
        json_body=None,
    ) -> tuple[int, dict, bytes]:
        body = None
        headers = dict(headers or {})
        if json_body is not None:
            body, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        elif data is not None:
            body = urllib.parse.urlencode(data).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if not browser and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        opener = self.browser if browser else urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def api(self, method: str, path: str, json_body=None) -> tuple[int, object]:
        status, _, body = self.http("/api/v1" + path, method=method, json_body=json_body, browser=False)
        return status, (json.loads(body) if body else None)

    def sign_in(self) -> None:
        self.cookies.clear()
        status, _, page = self.http("/login/")
        check(status == 200, f"GET /login/ answered {status}")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        check(token, "the login page has no CSRF token")
        status, headers, _ = self.http(
            "/login/",
            data={"username": DEMO_USER, "password": DEMO_PASSWORD, "csrfmiddlewaretoken": token.group(1).decode()},
            headers={"Referer": self.url + "/login/"},
        )
        check(
            status == 302 and not headers.get("Location", "").startswith("/login"),
            f"signing in as {DEMO_USER} answered {status} {headers.get('Location')}",
        )
        status, _, page = self.http("/runs/")
        check(status == 200 and DEMO_USER.encode() in page, f"the runs page after signing in answered {status}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def timed(label: str):
    def wrap(fn):
        def inner(*args, **kwargs):
            start = time.monotonic()
            result = fn(*args, **kwargs)
            print(f"docker-test: ok  {label} ({time.monotonic() - start:.1f}s)", flush=True)
            return result

        return inner

    return wrap


# --- the checks -------------------------------------------------------------------------------------------


@timed("login page, /healthz and /readyz answer on the published port")
def check_web_answers(stack: Stack) -> None:
    status, _, page = stack.http("/login/")
    check(status == 200 and b"csrfmiddlewaretoken" in page, f"GET /login/ answered {status}")
    status, _, body = stack.http("/healthz")
    check(status == 200 and json.loads(body) == {"status": "ok"}, f"/healthz: {status} {body[:200]!r}")
    status, _, body = stack.http("/readyz")
    check(status == 200, f"/readyz: {status} {body[:300]!r}")
    check(json.loads(body)["checks"] == {"database": "ok", "broker": "ok", "mlflow": "ok"}, f"/readyz: {body!r}")


@timed("only the web port is published (PostgreSQL, Redis, MLflow are not)")
def check_published_ports(stack: Stack, web_port: int) -> None:
    published = {}
    for name, c in stack.containers().items():
        check(c["HostConfig"]["NetworkMode"] != "host", f"{name} runs on the host's network")
        for port, bindings in (c["NetworkSettings"]["Ports"] or {}).items():
            for b in bindings or []:
                published.setdefault(name, []).append(f"{b['HostIp']}:{b['HostPort']}->{port}")
    check(published == {"web": [f"127.0.0.1:{web_port}->8000/tcp"]}, f"published ports: {published}")


@timed("migrations ran (migrate exited 0; `migrate --check` finds none left)")
def check_migrations(stack: Stack) -> None:
    migrate = stack.containers(all_=True)["migrate"]["State"]
    check(migrate["Status"] == "exited" and migrate["ExitCode"] == 0, f"migrate: {migrate}")
    stack.dc("exec", "-T", "web", "python", "manage.py", "migrate", "--check", "--noinput")


@timed("demo user seeded (in the worker image) and signed in through the login form")
def check_demo_login(stack: Stack) -> None:
    out = stack.dc("exec", "-T", "worker-cpu", "python", "manage.py", "seed_demo", "--no-run", timeout=900).stdout
    check("seeded team" in out or "already seeded" in out, f"seed_demo printed: {out[-500:]}")
    stack.sign_in()


@timed(f"a {STEPS}-step SFT run went through the CPU worker and MLflow; artifacts downloaded through the web")
def check_sft_run(stack: Stack) -> int:
    stack.token = (
        stack.dc("exec", "-T", "web", "python", "manage.py", "api_token", DEMO_USER).stdout.strip().split()[-1]
    )
    status, models = stack.api("GET", "/base-models")
    check(status == 200 and models, f"GET /base-models: {status} {models}")
    status, datasets = stack.api("GET", "/datasets")
    check(status == 200, f"GET /datasets: {status} {datasets}")
    train = next((d for d in datasets if d["name"] == "addition-train"), None)
    check(train, f"no demo dataset addition-train in {[d['name'] for d in datasets]}")
    status, pipeline = stack.api(
        "POST",
        "/pipelines",
        {
            "name": "docker-test sft",
            "base_model_id": models[0]["id"],
            "spec": {
                "seed": 7,
                "auto_evaluate": False,
                "stages": [
                    {
                        "name": "sft",
                        "method": "sft",
                        "dataset_id": train["id"],
                        "input": "base",
                        "config": {"max_steps": STEPS, "logging_steps": 1, "save_steps": 100000},
                        "adapter": {"type": "none"},
                    }
                ],
            },
        },
    )
    check(status == 201, f"POST /pipelines: {status} {pipeline}")
    status, run = stack.api("POST", f"/pipelines/{pipeline['id']}/runs", {})
    check(status == 201, f"POST /pipelines/{pipeline['id']}/runs: {status} {run}")
    number = run["number"]
    deadline = time.monotonic() + 900
    while run["status"] not in ("succeeded", "failed", "cancelled"):
        check(time.monotonic() < deadline, f"run #{number} still {run['status']} after 900s: {run}")
        time.sleep(3)
        status, run = stack.api("GET", f"/runs/{number}")
        check(status == 200, f"GET /runs/{number}: {status}")
    check(
        run["status"] == "succeeded",
        f"run #{number} {run['status']}: {run.get('error')}\n{stack.dc('logs', '--tail=60', 'worker-cpu').stdout}",
    )
    check(run["mlflow_run_id"], f"run #{number} has no MLflow run")
    check_artifacts(stack, number)
    return number


def list_artifacts(stack: Stack, number: int, path: str) -> tuple[list[tuple[str, int]], list[str], bytes]:
    """(files with their listed sizes, folders, the page) of one folder of stage "sft", as the run page lists it."""
    status, _, page = stack.http(f"/runs/{number}/artifacts/?" + urllib.parse.urlencode({"stage": "sft", "path": path}))
    check(status == 200, f"artifact listing {path!r} of run #{number}: {status}")
    rows = re.findall(r'<tr data-artifact="([^"]+)" data-kind="(file|folder)">(.*?)</tr>', page.decode(), re.S)
    files = [
        (html.unescape(name), int(re.search(r'data-size="(\d+)"', body).group(1)))
        for name, kind, body in rows
        if kind == "file" and re.search(r'data-size="\d+"', body)
    ]
    folders = [html.unescape(name) for name, kind, _ in rows if kind == "folder"]
    check(b"mlflow:5000" not in page, "an artifact page shows MLflow's address")
    return files, folders, page


def check_artifacts(stack: Stack, number: int) -> None:
    """List the stage's artifacts through the web (the root and its folders), download the largest file:
    as an attachment, with the byte count the listing shows."""
    files, folders, _ = list_artifacts(stack, number, "")
    for folder in folders:
        files += list_artifacts(stack, number, folder)[0]
    check(files, f"no artifact files listed for run #{number} (folders: {folders})")
    name, size = max(files, key=lambda f: f[1])
    status, headers, body = stack.http(
        f"/runs/{number}/artifacts/download/?" + urllib.parse.urlencode({"stage": "sft", "path": name})
    )
    check(status == 200, f"download {name}: {status} {body[:300]!r}")
    check(headers.get("Content-Disposition", "").startswith("attachment"), f"download {name}: {headers}")
    check(len(body) == size, f"download {name}: {len(body)} bytes, listed as {size}")
    print(f"docker-test:     downloaded {name} ({size} bytes) of {len(files)} files through the web", flush=True)


@timed("web image: no torch, runs as a non-root user")
def check_web_image(stack: Stack) -> None:
    web = stack.containers()["web"]
    image = web["Config"]["Image"]
    uid = stack.dc("exec", "-T", "web", "id", "-u").stdout.strip()
    check(uid.isdigit() and int(uid) != 0, f"the web container runs as uid {uid}")
    check(web["Config"]["User"] not in ("", "root", "0"), f"the web image's USER is {web['Config']['User']!r}")
    probe = stack.run(
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "python",
        "-c",
        "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('torch') is None else 3)",
        check_rc=False,
    )
    check(probe.returncode == 0, f"torch is importable in {image} (exit {probe.returncode}) {probe.stderr[-300:]}")
    for service in ("worker-cpu", "beat", "mlflow"):
        uid = stack.dc("exec", "-T", service, "id", "-u").stdout.strip()
        check(uid != "0", f"{service} runs as root")


@timed("down, then up: the user, the run and its artifacts are still there (volumes)")
def check_down_up_keeps_data(stack: Stack, number: int, services: list[str]) -> None:
    stack.dc("down", "--timeout", "60", timeout=300)
    check(not stack.containers(all_=True), "containers left after down")
    stack.dc("up", "-d", "--no-build", timeout=600)
    stack.wait_healthy(services)
    stack.sign_in()
    status, run = stack.api("GET", f"/runs/{number}")
    check(status == 200 and run["status"] == "succeeded", f"after down/up, run #{number}: {status} {run}")
    check_artifacts(stack, number)


@timed("stop: every container stopped on SIGTERM within its grace period")
def check_stops_cleanly(stack: Stack) -> None:
    before = {name: c["Id"] for name, c in stack.containers().items()}
    stack.dc("stop", timeout=300)
    after = stack.containers(all_=True)
    codes = {}
    for name in before:
        state = after[name]["State"]
        check(state["Status"] == "exited", f"{name} is {state['Status']} after stop")
        codes[name] = state["ExitCode"]
    killed = {n: c for n, c in codes.items() if c == 137 or after[n]["State"].get("OOMKilled")}
    check(not killed, f"killed after the grace period (exit 137): {killed}; all: {codes}")
    print(f"docker-test:     exit codes after stop: {codes}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--compose", required=True, help="the compose command with -p and -f options")
    parser.add_argument(
        "--services", default="postgres,redis,mlflow,web,worker-cpu,beat", help="services that must be healthy"
    )
    args = parser.parse_args(argv)
    stack = Stack(args.url, args.compose)
    services = args.services.split(",")
    try:
        start = time.monotonic()
        stack.wait_healthy(services)
        print(f"docker-test: ok  stack healthy: {', '.join(services)} ({time.monotonic() - start:.1f}s)", flush=True)
        check_web_answers(stack)
        check_published_ports(stack, urllib.parse.urlsplit(args.url).port)
        check_migrations(stack)
        check_demo_login(stack)
        number = check_sft_run(stack)
        check_web_image(stack)
        check_down_up_keeps_data(stack, number, services)
        check_stops_cleanly(stack)
    except (CheckFailed, subprocess.TimeoutExpired) as exc:
        print(f"docker-test: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
