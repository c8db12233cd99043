#!/usr/bin/env bash
# Every check CodeKraft has, on a fresh machine: installs what the tests need (Debian packages),
# starts a throwaway PostgreSQL, then formatting, lints and the whole test suite on SQLite and
# PostgreSQL. The last line counts the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v node >/dev/null || need+=(nodejs npm)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  $as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The local sandbox jail (the tests need it working under CI=true).
source scripts/sandbox-jail-deps.sh

# A throwaway PostgreSQL on a free port, unless TEST_DATABASE_URL points at one.
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  pg_dir=$(mktemp -d /tmp/codekraft-ci-pg.XXXXXX)
  pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$pg_dir"
    as_pg=(runuser -u postgres --)
  fi
  "${as_pg[@]}" "$pg_bin/initdb" -A trust -U postgres --no-sync -D "$pg_dir/data" >/dev/null
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w start \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500" >/dev/null
  trap '"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$pg_dir"' EXIT
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
fi

# The API fuzzer (tests/it/fuzz.rs), pinned, in a venv of its own.
fuzz_venv=target/fuzz-venv
if ! cmp -s tests/fuzz/requirements.txt "$fuzz_venv/requirements.txt"; then
  rm -rf "$fuzz_venv"
  python3 -m venv "$fuzz_venv"
  "$fuzz_venv/bin/pip" install -q --disable-pip-version-check -r tests/fuzz/requirements.txt
  cp tests/fuzz/requirements.txt "$fuzz_venv/requirements.txt"
fi

export CODEKRAFT_REQUIRE_NODE=1
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log=$(mktemp)
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# One closing line over every test binary: "N passed, N failed".
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit $status
