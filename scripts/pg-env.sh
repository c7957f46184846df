# Sourced by scripts/test.sh and scripts/with-s3.sh after s3-env.sh: starts a throwaway
# PostgreSQL (the installed one; installed with apt-get when missing) in a temporary
# directory on a free port of 127.0.0.1, exports SEDIMENT_TEST_POSTGRES_URL, and stops
# it (with the S3 server) when the calling shell exits. PostgreSQL refuses to run as
# root, so as root it runs as the `postgres` user.
PG_BIN="$(pg_config --bindir 2>/dev/null || true)"
if [ ! -x "$PG_BIN/initdb" ]; then
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
fi
if [ ! -x "$PG_BIN/initdb" ]; then
  echo "== installing PostgreSQL with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi

PG_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
PG_DIR="$(mktemp -d -t sediment-pg.XXXXXX)"
as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}
if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DIR"; fi
as_pg "'$PG_BIN/initdb' -D '$PG_DIR/data' -A trust -U postgres --no-sync >'$PG_DIR/initdb.log' 2>&1" \
  || { echo "initdb failed:"; cat "$PG_DIR/initdb.log"; exit 1; }
as_pg "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/server.log' -w \
  -o \"-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300\" start >/dev/null" \
  || { echo "PostgreSQL did not start:"; cat "$PG_DIR/server.log"; exit 1; }
stop_servers() {
  if [ -n "${S3_PID:-}" ]; then kill "$S3_PID" 2>/dev/null || true; fi
  as_pg "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
trap stop_servers EXIT
echo "== PostgreSQL ($("$PG_BIN/postgres" --version | awk '{print $3}')) on 127.0.0.1:$PG_PORT"
export SEDIMENT_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
