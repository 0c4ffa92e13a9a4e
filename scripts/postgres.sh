# A throwaway PostgreSQL server on loopback for the tests of the PostgreSQL path.
# Sourced, not run. `start_test_postgres` installs Debian's postgresql if it is missing,
# creates a fresh cluster in a temporary directory, starts it on a free loopback port, exports
# IDEM_TEST_DATABASE_URL and stops the server (and removes the cluster) when the shell exits.
# Needs scripts/env.sh sourced first (apt_install).

start_test_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install "the tests of the PostgreSQL read models need a real server" postgresql
  fi
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  PG_TEST_DIR="$(mktemp -d /tmp/idem-pg.XXXXXX)"
  # PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user.
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$PG_TEST_DIR"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$PG_TEST_DIR/data" -A trust -U idem --no-sync >/dev/null
  # fsync off by default: a test cluster is thrown away, and its durability is not what the
  # tests test. Benchmarks set PG_FSYNC=on.
  "${as[@]}" "$bin/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_TEST_DIR -c fsync=${PG_FSYNC:-off} -c max_connections=300" \
    start >/dev/null
  PG_TEST_STOP="${as[*]} $bin/pg_ctl -D $PG_TEST_DIR/data -m fast stop"
  trap 'stop_test_postgres' EXIT
  export IDEM_TEST_DATABASE_URL="postgres://idem@127.0.0.1:$port/postgres"
  echo "test PostgreSQL on $IDEM_TEST_DATABASE_URL" >&2
}

stop_test_postgres() {
  if [ -n "${PG_TEST_STOP:-}" ]; then
    $PG_TEST_STOP >/dev/null 2>&1 || true
    rm -rf "$PG_TEST_DIR"
    PG_TEST_STOP=""
  fi
}
