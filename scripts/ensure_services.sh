#!/usr/bin/env bash
# Make sure the servers that the test suite talks to are up:
#
#   PostgreSQL  DATABASE_URL       (default postgres://postgres@127.0.0.1:5432/refinery)
#   Redis       CELERY_BROKER_URL  (default redis://127.0.0.1:6379/15; amqp:// means RabbitMQ)
#
# For each one: reachable -> ok. Installed here but down -> start it and wait.
# Not installed -> fail, naming the Debian package. Only local servers
# (127.0.0.1 / localhost / ::1) are ever started; a remote URL is only checked.
# Used by `make test` and .ci/run; safe to run any number of times.
set -euo pipefail

DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/refinery}"
CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/15}"
WAIT_SECONDS="${REFINERY_SERVICE_WAIT:-60}"

say() { printf 'ensure_services: %s\n' "$*"; }
die() { printf 'ensure_services: ERROR: %s\n' "$*" >&2; exit 1; }

# Prints "scheme host port" for a URL (python3 is always there: the project needs it).
parse_url() {
    python3 - "$1" "$2" <<'PY'
import sys
from urllib.parse import urlsplit
url, default_port = sys.argv[1], sys.argv[2]
u = urlsplit(url)
print(u.scheme or "-", u.hostname or "127.0.0.1", u.port or default_port)
PY
}

is_local() { case "$1" in 127.0.0.1|localhost|::1) return 0 ;; *) return 1 ;; esac; }

port_open() {  # host port
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

wait_until() {  # description command...
    local what="$1"; shift
    local deadline=$((SECONDS + WAIT_SECONDS))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            die "$what did not come up within ${WAIT_SECONDS}s"
        fi
        sleep 0.5
    done
}

# --- PostgreSQL --------------------------------------------------------------
pg_ready() {  # host port
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$1" -p "$2" -t 2
    else
        port_open "$1" "$2"
    fi
}

ensure_postgres() {
    local scheme host port
    read -r scheme host port < <(parse_url "$DATABASE_URL" 5432)
    case "$scheme" in
        postgres|postgresql|pgsql|postgis) ;;
        *) say "DATABASE_URL is $scheme://, not PostgreSQL: nothing to start"; return 0 ;;
    esac
    if pg_ready "$host" "$port"; then
        say "PostgreSQL on $host:$port: up"
        return 0
    fi
    is_local "$host" || die "PostgreSQL at $host:$port is not reachable (a remote server: not starting it)"
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        die "PostgreSQL is not installed. Install the Debian package: apt-get install -y postgresql"
    fi
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    say "PostgreSQL $version on $host:$port is down: starting it"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
        say "pg_ctlcluster returned non-zero (it may already be starting); waiting"
    wait_until "PostgreSQL on $host:$port" pg_ready "$host" "$port"
    say "PostgreSQL on $host:$port: up"
}

# Create the database named in DATABASE_URL when missing (local servers, psql
# present). pytest-django does not need it (it creates test_<name>), but
# `make run DATABASE_URL=...` and `manage.py migrate` do.
ensure_database() {
    local scheme host port
    read -r scheme host port < <(parse_url "$DATABASE_URL" 5432)
    case "$scheme" in postgres|postgresql|pgsql|postgis) ;; *) return 0 ;; esac
    is_local "$host" && command -v psql >/dev/null 2>&1 || return 0
    python3 - "$DATABASE_URL" <<'PY' || say "could not check/create the database (continuing)"
import subprocess, sys
from urllib.parse import urlsplit, urlunsplit
u = urlsplit(sys.argv[1])
name = u.path.lstrip("/")
if not name or not name.replace("_", "").isalnum():
    sys.exit(0)
admin = urlunsplit((u.scheme if u.scheme != "pgsql" else "postgres", u.netloc, "/postgres", u.query, ""))
psql = ["psql", admin, "-v", "ON_ERROR_STOP=1", "-tAc"]
exists = subprocess.run(psql + [f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                        capture_output=True, text=True, check=True).stdout.strip()
if exists != "1":
    subprocess.run(psql + [f'CREATE DATABASE "{name}"'], capture_output=True, text=True, check=True)
    print(f"ensure_services: created database {name}")
PY
}

# --- Redis / RabbitMQ --------------------------------------------------------
redis_ready() {  # host port
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h "$1" -p "$2" ping 2>/dev/null)" = "PONG" ]
    else
        port_open "$1" "$2"
    fi
}

ensure_redis() {
    local scheme host port
    read -r scheme host port < <(parse_url "$CELERY_BROKER_URL" 6379)
    if redis_ready "$host" "$port"; then
        say "Redis on $host:$port: up"
        return 0
    fi
    is_local "$host" || die "Redis at $host:$port is not reachable (a remote server: not starting it)"
    command -v redis-server >/dev/null 2>&1 ||
        die "Redis is not installed. Install the Debian package: apt-get install -y redis-server"
    say "Redis on $host:$port is down: starting it"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_until "Redis on $host:$port" redis_ready "$host" "$port"
    say "Redis on $host:$port: up"
}

ensure_rabbitmq() {
    local scheme host port
    read -r scheme host port < <(parse_url "$CELERY_BROKER_URL" 5672)
    if port_open "$host" "$port"; then
        say "RabbitMQ on $host:$port: up"
        return 0
    fi
    is_local "$host" || die "RabbitMQ at $host:$port is not reachable (a remote server: not starting it)"
    command -v rabbitmq-server >/dev/null 2>&1 ||
        die "RabbitMQ is not installed. Install the Debian package: apt-get install -y rabbitmq-server"
    say "RabbitMQ on $host:$port is down: starting it"
    rabbitmq-server -detached
    wait_until "RabbitMQ on $host:$port" port_open "$host" "$port"
    say "RabbitMQ on $host:$port: up"
}

ensure_broker() {
    case "$CELERY_BROKER_URL" in
        redis://*|rediss://*) ensure_redis ;;
        amqp://*|amqps://*|pyamqp://*) ensure_rabbitmq ;;
        *) say "CELERY_BROKER_URL is ${CELERY_BROKER_URL%%:*}://: no server to start" ;;
    esac
}

ensure_postgres
ensure_database
ensure_broker
