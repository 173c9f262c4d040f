#!/usr/bin/env bash
# make docker-test: build the Docker deployment and start it for real, then check it as a user would.
#
#   1. a Docker daemon: the running one, or (root only) `dockerd --iptables=false --bridge=none`,
#      stopped again at the end; without root and without a daemon it fails naming what is missing;
#   2. the base image refinery-base:bookworm from Debian packages when absent (scripts/docker_base_image.sh);
#   3. the CPU torch wheel from pip's find-links folder into docker/wheels/ (the build context);
#   4. builds every image of docker/docker-compose.yml + docker/docker-compose.test.yml (timed);
#   5. `compose up -d`, then tests/docker/check_stack.py (login page, published ports, migrations,
#      demo login, an SFT run through the CPU worker and MLflow with its artifacts downloaded
#      through the web, web image without torch and not root, down+up keeps the data, clean stop);
#   6. removes the stack and its volumes: on success, failure and interrupt alike.
#
# Environment: DOCKER_TEST_PROJECT (compose project, default refinery-test), DOCKER_TEST_WEB_PORT
# (default: a free port), DOCKER_TEST_KEEP=1 (leave the stack up on failure, to look at it),
# DOCKER_COMPOSE (the compose command; default `docker compose` if present, else docker-compose),
# TORCH_WHEEL (the CPU torch wheel; default: found in pip's find-links folders).
# Logs: test-results/docker/ (build logs, the stack's logs on failure, timings.json).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
PROJECT="${DOCKER_TEST_PROJECT:-refinery-test}"
OUT="$ROOT/test-results/docker"
BASE_IMAGE=refinery-base:bookworm
TORCH_FILE_GLOB='torch-2.13.0+cpu-cp311-*.whl'
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/refinery-docker-test.XXXXXX)"

say() { printf 'docker-test: %s\n' "$*"; }
die() { printf 'docker-test: ERROR: %s\n' "$*" >&2; exit 1; }

DOCKERD_PID=""
STACK_STARTED=""
START=$SECONDS
declare -A TIMES=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$STACK_STARTED" ]; then
        if [ "$rc" -ne 0 ]; then
            say "failed (exit $rc): the stack's state and logs follow (also in $OUT/stack.log)"
            "${COMPOSE[@]}" ps -a 2>&1 | tee "$OUT/stack.log"
            "${COMPOSE[@]}" logs --no-color --tail=80 >>"$OUT/stack.log" 2>&1
            tail -n 60 "$OUT/stack.log"
        fi
        if [ "$rc" -ne 0 ] && [ -n "${DOCKER_TEST_KEEP:-}" ]; then
            say "DOCKER_TEST_KEEP is set: the stack stays up; remove it with: ${COMPOSE[*]} down -v"
        else
            say "removing the stack and its volumes"
            "${COMPOSE[@]}" --profile gpu down -v --remove-orphans --timeout 30 >"$WORK/down.log" 2>&1 ||
                { cat "$WORK/down.log"; [ "$rc" -ne 0 ] || rc=1; }
        fi
    fi
    if [ -n "$DOCKERD_PID" ]; then
        say "stopping the dockerd this run started (pid $DOCKERD_PID)"
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$DOCKERD_PID" 2>/dev/null
        wait "$DOCKERD_PID" 2>/dev/null
        cp "$WORK/dockerd.log" "$OUT/dockerd.log" 2>/dev/null
    fi
    rm -rf "$WORK"
    say "total $((SECONDS - START)) s; exit $rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. tools and a daemon --------------------------------------------------------------------------
is_root() { [ "$(id -u)" = 0 ]; }
need_packages=()
command -v docker >/dev/null 2>&1 || need_packages+=(docker.io)
command -v dockerd >/dev/null 2>&1 || need_packages+=(docker.io)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    need_packages+=(docker-compose)
fi
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || command -v debootstrap >/dev/null 2>&1 || need_packages+=(debootstrap)
if [ ${#need_packages[@]} -gt 0 ]; then
    mapfile -t need_packages < <(printf '%s\n' "${need_packages[@]}" | sort -u)
    is_root || die "missing: ${need_packages[*]} (install the Debian packages: sudo apt-get install -y ${need_packages[*]})"
    say "installing the Debian packages ${need_packages[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
    say "using the running Docker daemon ($(docker info -f '{{.ServerVersion}}'))"
else
    is_root || die "no Docker daemon is running, and starting one needs root: run as root, or start it: sudo dockerd --iptables=false --bridge=none"
    command -v dockerd >/dev/null 2>&1 || die "dockerd is missing: apt-get install -y docker.io"
    say "starting dockerd --iptables=false --bridge=none"
    # In a session of its own: a Ctrl-C (or CI's timeout) that reaches this script's process group
    # must not stop the daemon before the cleanup has removed the stack through it.
    setsid dockerd --iptables=false --bridge=none >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 20 "$WORK/dockerd.log" >&2; die "dockerd exited"; }
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { tail -n 20 "$WORK/dockerd.log" >&2; die "dockerd did not answer within 60 s"; }
fi

# BuildKit (the Dockerfiles use RUN --mount): `docker buildx`, or a docker CLI older than 23 whose
# DOCKER_BUILDKIT=1 builds without buildx (Debian bookworm's docker.io is 20.10).
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
if ! docker buildx version >/dev/null 2>&1; then
    cli_major() { "$1" version -f '{{.Client.Version}}' 2>/dev/null | cut -d. -f1; }
    if [ "$(cli_major docker)" -ge 23 ] 2>/dev/null; then
        if [ -x /usr/bin/docker ] && [ "$(cli_major /usr/bin/docker)" -lt 23 ] 2>/dev/null; then
            mkdir -p "$WORK/bin" && ln -s /usr/bin/docker "$WORK/bin/docker"
            export PATH="$WORK/bin:$PATH"
            say "no buildx: building with /usr/bin/docker $(cli_major docker).x (BuildKit without buildx)"
        else
            die "BuildKit needs the buildx plugin with docker $(cli_major docker): install docker-buildx (or Debian's docker.io 20.10)"
        fi
    fi
fi

if [ -n "${DOCKER_COMPOSE:-}" ]; then
    read -r -a COMPOSE_CMD <<<"$DOCKER_COMPOSE"
elif docker compose version >/dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
else
    COMPOSE_CMD=(docker-compose)
fi
COMPOSE=("${COMPOSE_CMD[@]}" -p "$PROJECT" -f docker/docker-compose.yml -f docker/docker-compose.test.yml)
say "compose: ${COMPOSE_CMD[*]} ($("${COMPOSE_CMD[@]}" version --short 2>/dev/null || echo '?'))"

# --- 2. base image, 3. torch wheel -------------------------------------------------------------------
t=$SECONDS
bash scripts/docker_base_image.sh "$BASE_IMAGE"
TIMES[base_image_s]=$((SECONDS - t))

wheel="${TORCH_WHEEL:-}"
if [ -z "$wheel" ]; then
    dirs="$(pip config list 2>/dev/null | sed -n "s/^[a-z:.]*find-links='\(.*\)'$/\1/p") ${PIP_FIND_LINKS:-}"
    for d in $dirs; do
        d="${d#file://}"
        for f in "$d"/$TORCH_FILE_GLOB; do [ -f "$f" ] && wheel="$f" && break 2; done
    done
fi
[ -n "$wheel" ] && [ -f "$wheel" ] ||
    die "no CPU torch wheel ($TORCH_FILE_GLOB) in pip's find-links folders; set TORCH_WHEEL=/path/to/it"
if ! cmp -s "$wheel" "docker/wheels/$(basename "$wheel")"; then
    cp "$wheel" docker/wheels/
fi
say "torch wheel: docker/wheels/$(basename "$wheel")"

# --- secrets and ports of this run -------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
WEB_PORT="${DOCKER_TEST_WEB_PORT:-$(free_port)}"
export REFINERY_WEB_PORT="$WEB_PORT"
export DJANGO_SECRET_KEY="$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')"
export REFINERY_SECRETS_KEY="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
export DJANGO_CSRF_TRUSTED_ORIGINS="http://127.0.0.1:$WEB_PORT,http://localhost:$WEB_PORT"
export REFINERY_CODE_VERSION="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"

# A stack left by an earlier run that was killed: remove it first.
"${COMPOSE[@]}" --profile gpu down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true

# --- 4. build ----------------------------------------------------------------------------------------
for service in postgres redis mlflow web worker-cpu; do
    t=$SECONDS
    say "building $service"
    if ! "${COMPOSE[@]}" build "$service" >"$OUT/build-$service.log" 2>&1; then
        tail -n 40 "$OUT/build-$service.log" >&2
        die "building $service failed (log: $OUT/build-$service.log)"
    fi
    TIMES[build_${service//-/_}_s]=$((SECONDS - t))
done
size_mb() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%d", $1 / 1e6}'; }
for image in refinery-test-web refinery-test-worker refinery-test-mlflow refinery-test-postgres refinery-test-redis; do
    TIMES[size_${image//-/_}_mb]=$(size_mb "$image:latest")
done
say "built in $((TIMES[build_postgres_s] + TIMES[build_redis_s] + TIMES[build_mlflow_s] + TIMES[build_web_s] + TIMES[build_worker_cpu_s])) s;" \
    "web $(size_mb refinery-test-web:latest) MB, worker $(size_mb refinery-test-worker:latest) MB," \
    "mlflow $(size_mb refinery-test-mlflow:latest) MB"

# --- 5. up and check ---------------------------------------------------------------------------------
t=$SECONDS
STACK_STARTED=1
say "compose up (web on 127.0.0.1:$WEB_PORT)"
"${COMPOSE[@]}" up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "compose up failed"; }
python3 tests/docker/check_stack.py --url "http://127.0.0.1:$WEB_PORT" --compose "${COMPOSE[*]}"
TIMES[stack_checks_s]=$((SECONDS - t))

TIMES[total_s]=$((SECONDS - START))
{
    printf '{'
    sep=""
    for key in "${!TIMES[@]}"; do printf '%s"%s": %s' "$sep" "$key" "${TIMES[$key]}"; sep=", "; done
    printf '}\n'
} >"$OUT/timings.json"
say "passed: $(cat "$OUT/timings.json")"
