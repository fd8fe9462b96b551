#!/usr/bin/env bash
# PostgreSQL (127.0.0.1:5432, user postgres without a password) and Redis (127.0.0.1:6379) for
# the compose stack's native run (scripts/stack.py, tests/test_stack.py). Where they already
# answer, nothing happens; where they are missing, Debian's packages are installed (as root)
# and started, PostgreSQL trusting local TCP connections: a throwaway test server.
set -euo pipefail

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || {
      echo "PostgreSQL is not running on 127.0.0.1:5432: install and start it (Debian: apt-get install postgresql)" >&2
      exit 1
    }
    echo "Installing PostgreSQL (Debian's package) for the stack test..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    done
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -h 127.0.0.1 -p 5432
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if ! command -v redis-server >/dev/null; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || {
      echo "Redis is not running on 127.0.0.1:6379: install and start it (Debian: apt-get install redis-server)" >&2
      exit 1
    }
    echo "Installing Redis (Debian's package) for the stack test..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null
fi
