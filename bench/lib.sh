# Shared by the benchmark scripts (sourced, not run): a throwaway project whose db is
# the stand-in postgres, a moto S3 server on loopback, and helpers to build a database
# of a given pgbench scale and to time a restore done by hand.
# Expects: $SCALE set by the caller; leaves $bin, $work, $name, $user, $port, s3, dbx,
# psqlx, log, now, secs, make_source, relax, unrelax, alone, hwm_run.
export NO_COLOR=1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

cargo build --release --quiet
bin=$PWD/target/release/countable
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto_pid=$!
name=bench_$$
cleanup() {
  (cd "$work/$name" 2>/dev/null && docker compose -p "$name" down -v >/dev/null 2>&1) || true
  kill "$moto_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
s3() { aws --endpoint-url "http://127.0.0.1:$port" "$@"; }
log() { printf 'bench: %s\n' "$*" >&2; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }

cd "$work"
"$bin" new "$name" --yes --postgres 15 --db-image countable-test/postgres:15 \
  --python-image countable-test/python --nginx-image countable-test/nginx >/dev/null 2>&1
cd "$name"
python3 - "$port" "$name" <<'PY'
import sys
p = "countable.yml"; s = open(p).read()
head = s[: s.index("environments:")]
open(p, "w").write(head + f"environments:\n  prod:\n    backups: s3://bench/backups/shop/\n    endpoint_url: http://127.0.0.1:{sys.argv[1]}\n    compose_project: {sys.argv[2]}\n")
PY
docker compose -p "$name" up -d --wait db >/dev/null 2>&1
for _ in $(seq 50); do s3 s3 ls >/dev/null 2>&1 && break; sleep 0.2; done
s3 s3 mb s3://bench >/dev/null
user=$name
dbx() { docker compose -p "$name" exec -T db "$@"; }
psqlx() { dbx psql -X -q -v ON_ERROR_STOP=1 -U "$user" "$@"; }

make_source() { # $1 = scale, $2 = db name, $3 = a database to copy first (the app's)
  psqlx -d postgres -c "DROP DATABASE IF EXISTS $2" -c "CREATE DATABASE $2" >/dev/null
  # A copy by dump: CREATE DATABASE … TEMPLATE needs the app disconnected.
  if [ -n "${3:-}" ]; then dbx pg_dump -U "$user" "$3" | psqlx -d "$2" >/dev/null; fi
  dbx pgbench -q -i -s "$1" -U "$user" "$2" >/dev/null 2>&1
  psqlx -d "$2" -c "DROP TABLE IF EXISTS docs" -c "CREATE TABLE docs AS SELECT g AS id, md5(g::text) || repeat(' lorem ipsum', 12) AS body, jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'b', g % 7)) AS meta FROM generate_series(1, $1 * 4000) g" >/dev/null
  psqlx -d "$2" -Atc "SELECT pg_size_pretty(pg_database_size('$2'))"
}

relax() { psqlx -d postgres -c "ALTER SYSTEM SET fsync = off" -c "ALTER SYSTEM SET synchronous_commit = off" -c "ALTER SYSTEM SET full_page_writes = off" -c "ALTER SYSTEM SET autovacuum = off" -c "ALTER SYSTEM SET max_wal_size = '4GB'" -c "ALTER SYSTEM SET maintenance_work_mem = '256MB'" -c "SELECT pg_reload_conf()" >/dev/null; }
unrelax() { for s in fsync synchronous_commit full_page_writes autovacuum max_wal_size maintenance_work_mem; do psqlx -d postgres -c "ALTER SYSTEM RESET $s" >/dev/null; done; psqlx -d postgres -c "SELECT pg_reload_conf()" >/dev/null; }

# restore stage alone, best of two
alone() { local a b; a=$(alone_once "$@"); b=$(alone_once "$@"); python3 -c "print(min($a, $b))"; }

# restore stage alone: the decompressed dump already inside the container
alone_once() { # $1 = file in container, $2 = plain|custom
  psqlx -d postgres -c "DROP DATABASE IF EXISTS alone" -c "CREATE DATABASE alone TEMPLATE template0" >/dev/null
  relax
  local t0 t1
  t0=$(now)
  if [ "$2" = plain ]; then
    psqlx --single-transaction -d alone -f "$1" >/dev/null
  else
    dbx pg_restore --no-owner --no-acl --exit-on-error -U "$user" -d alone "$1"
  fi
  t1=$(now)
  unrelax
  psqlx -d postgres -c "DROP DATABASE alone" >/dev/null
  secs "$t0" "$t1"
}

# Run a command in the background, tracking its VmHWM; prints "seconds rss_kib". Its
# stdout goes to $work/out, stderr to $work/err.
hwm_run() {
  local t0 t1 pid hwm=0 h
  t0=$(now)
  "$@" >"$work/out" 2>"$work/err" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    h=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$h" ] && [ "$h" -gt "$hwm" ] && hwm=$h
    sleep 0.05
  done
  wait "$pid" || { cat "$work/err" >&2; exit 1; }
  t1=$(now)
  echo "$(secs "$t0" "$t1") $hwm"
}
