#!/usr/bin/env bash
# Make sure a local PostgreSQL with PostGIS is running and the test database exists.
# Used by `make test` (and so by CI). Installs Debian packages only when something is missing.
#
# The tests connect with GRIDGOV_TEST_POSTGIS_URL (default in gridgov/settings.py: role
# gridgov, password gridgov, database gridgov_test on 127.0.0.1). That role is created here
# with a password, so the tests work whether the server trusts local TCP (as on CI) or asks
# for a password (Debian's default scram-sha-256).
set -euo pipefail

PYTHON=${PYTHON:-.venv/bin/python}
url=$("$PYTHON" -c 'from gridgov.settings import get_settings; print(get_settings().test_postgis_url)')
read -r DB_USER DB_PASS DB_HOST DB_PORT DB_NAME < <("$PYTHON" - "$url" <<'PY'
import sys
from sqlalchemy.engine import make_url
u = make_url(sys.argv[1])
print(u.username or "postgres", u.password or "", u.host or "127.0.0.1", u.port or 5432, u.database)
PY
)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "ensure-postgis: need root to run: $*" >&2; return 1; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

if ! command -v pg_lsclusters >/dev/null; then
  echo "ensure-postgis: PostgreSQL is not installed; installing it" >&2
  apt_install postgresql
fi

major=$(pg_lsclusters --no-header | awk 'NR==1 {print $1}')
if [ -z "$major" ]; then
  echo "ensure-postgis: no PostgreSQL cluster found" >&2; exit 1
fi

if [ ! -f "/usr/share/postgresql/$major/extension/postgis.control" ]; then
  echo "ensure-postgis: installing postgresql-$major-postgis-3" >&2
  apt_install "postgresql-$major-postgis-3"
fi

if ! pg_lsclusters --no-header | awk '{print $4}' | grep -q online; then
  echo "ensure-postgis: starting PostgreSQL $major" >&2
  as_root pg_ctlcluster --skip-systemctl-redirect "$major" main start
fi

for _ in $(seq 1 30); do
  pg_isready -q -h "$DB_HOST" -p "$DB_PORT" && break
  sleep 1
done
pg_isready -q -h "$DB_HOST" -p "$DB_PORT" || {
  echo "ensure-postgis: PostgreSQL is not accepting connections on $DB_HOST:$DB_PORT" >&2; exit 1; }

# Administration as the postgres superuser: over the local socket with peer authentication
# (Debian's default) when we can become that user, else over TCP (a server that trusts it).
admin_psql() {
  if id postgres >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$DB_PORT" "$@"
  elif id postgres >/dev/null 2>&1 && command -v sudo >/dev/null; then
    sudo -u postgres psql -X -q -v ON_ERROR_STOP=1 -p "$DB_PORT" "$@"
  else
    psql -X -q -v ON_ERROR_STOP=1 -h "$DB_HOST" -p "$DB_PORT" -U postgres "$@"
  fi
}

if [ "$DB_USER" != postgres ]; then
  admin_psql -d postgres <<SQL
SET client_min_messages = warning;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE "$DB_USER" LOGIN CREATEDB PASSWORD '$DB_PASS';
  ELSE
    ALTER ROLE "$DB_USER" LOGIN CREATEDB PASSWORD '$DB_PASS';
  END IF;
END \$\$;
SQL
fi
if ! admin_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
  admin_psql -d postgres -c "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_USER\""
fi
# The tests make a schema per test, which needs the database's CREATE right: own it.
admin_psql -d postgres -c "ALTER DATABASE \"$DB_NAME\" OWNER TO \"$DB_USER\""
# PostGIS needs a superuser to install; the tests then only use it.
admin_psql -d "$DB_NAME" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS postgis"

version=$(PGPASSWORD="$DB_PASS" psql -X -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER" -d "$DB_NAME" \
  -tAc 'SELECT postgis_lib_version()') || {
  echo "ensure-postgis: cannot connect as $DB_USER to $DB_NAME on $DB_HOST:$DB_PORT" >&2; exit 1; }
echo "ensure-postgis: PostGIS $version ready in $DB_NAME for role $DB_USER"

# The replica test (tests/test_replica.py) copies this server with pg_basebackup over loopback:
# let the postgres role open replication connections from 127.0.0.1, with the method the
# server already uses there for ordinary ones.
hba=$(admin_psql -d postgres -tAc 'SHOW hba_file')
if ! as_root grep -Eq '^[[:space:]]*host[[:space:]]+replication[[:space:]]+(all|postgres)[[:space:]]+127\.0\.0\.1/32' "$hba"; then
  method=$(as_root awk '$1 == "host" && $2 == "all" && $3 == "all" && $4 == "127.0.0.1/32" {print $5; exit}' "$hba")
  echo "host replication postgres 127.0.0.1/32 ${method:-scram-sha-256}" | as_root tee -a "$hba" >/dev/null
  admin_psql -d postgres -tAc 'SELECT pg_reload_conf()' >/dev/null
  echo "ensure-postgis: replication from 127.0.0.1 allowed for the postgres role ($hba)"
fi
