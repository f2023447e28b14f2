#!/usr/bin/env bash
# Install (Debian's package), start on loopback and prepare the PostgreSQL server that the
# `postgres`-marked tests use; prints the URL for AUTOTUNE_TEST_POSTGRES.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >/dev/null
fi
version="$(ls /usr/lib/postgresql | sort -n | tail -1)"
if ! pg_lsclusters -h | grep -q "^$version main"; then
    pg_createcluster "$version" main >&2
fi
pg_ctlcluster "$version" main start >/dev/null 2>&1 || true  # may already run
for _ in $(seq 30); do
    pg_isready -q -h 127.0.0.1 && break
    sleep 1
done
su postgres -c "psql -q -v ON_ERROR_STOP=1" >&2 <<'SQL'
SELECT 'CREATE ROLE autotune LOGIN PASSWORD ''autotune-test'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'autotune')\gexec
SELECT 'CREATE DATABASE autotune_test OWNER autotune'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'autotune_test')\gexec
SQL
echo "postgresql+psycopg://autotune:autotune-test@127.0.0.1:5432/autotune_test"
