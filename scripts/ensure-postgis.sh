#!/usr/bin/env bash
# Make sure a local PostgreSQL with PostGIS is running and the test database exists.
# Used by `make test` (and so by CI). Installs Debian packages only when something is missing.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
TEST_DB=${GRIDGOV_TEST_DB:-gridgov_test}
export PGHOST PGPORT PGUSER

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
  pg_isready -q && break
  sleep 1
done
pg_isready -q || { echo "ensure-postgis: PostgreSQL is not accepting connections" >&2; exit 1; }

if ! psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$TEST_DB'" | grep -q 1; then
  psql -d postgres -qc "CREATE DATABASE $TEST_DB"
fi
psql -d "$TEST_DB" -qc "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS postgis"
echo "ensure-postgis: PostGIS $(psql -d "$TEST_DB" -tAc 'SELECT postgis_lib_version()') ready in $TEST_DB"
