#!/bin/bash
# Runs the Next.js dev server of the CodeKraft app inside an E2B sandbox.
#
#   compile_page.sh             Start the dev server in the foreground (the template's start_cmd, and
#                               what the backend starts in the background when the server died). A
#                               background request compiles / once the server listens, so the first
#                               preview is fast. Exits at once if the port is already taken.
#   compile_page.sh --wait [N]  Wait up to N seconds (default 60) until the server listens, then
#                               request / once (compiles it). Exit 0 when it listens, 1 otherwise.
#                               Used as the template's ready_cmd and by the backend's preview_url.
#
# Environment: APP_DIR (default /home/user/app, APP_ROOT in src/sandbox/e2b/mod.rs), PORT (3000),
# NEXT_DEV_FLAGS (extra flags for `next dev`, e.g. --turbopack), NEXT_DEV_LOG (/tmp/next-dev.log).
set -u

APP_DIR="${APP_DIR:-/home/user/app}"
PORT="${PORT:-3000}"
LOG="${NEXT_DEV_LOG:-/tmp/next-dev.log}"

listens() {
  # bash's /dev/tcp: no extra packages needed; envd also forwards localhost-only listeners.
  (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null
}

wait_until_ready() {
  local limit="$1" start
  start=$(date +%s)
  until listens; do
    if [ $(( $(date +%s) - start )) -gt "$limit" ]; then
      echo "nothing listens on port ${PORT} after ${limit} s (log: ${LOG})" >&2
      [ -f "$LOG" ] && tail -n 20 "$LOG" >&2
      return 1
    fi
    sleep 1
  done
  # Any HTTP answer will do (a compile error page is still a running server); this only warms /.
  local left=$(( limit - ($(date +%s) - start) ))
  [ "$left" -lt 5 ] && left=5
  curl -s -o /dev/null --max-time "$left" "http://localhost:${PORT}/" || true
  echo "dev server listens on port ${PORT}"
}

case "${1:-}" in
  --wait)
    wait_until_ready "${2:-60}"
    exit $?
    ;;
  "") ;;
  *)
    echo "usage: $0 [--wait SECONDS]" >&2
    exit 2
    ;;
esac

if listens; then
  echo "port ${PORT} is already served; not starting another dev server"
  exit 0
fi

cd "$APP_DIR" || exit 1
export NEXT_TELEMETRY_DISABLED=1
( wait_until_ready 300 >/dev/null 2>&1 & )
# shellcheck disable=SC2086 # NEXT_DEV_FLAGS is a list of flags
exec npx next dev --hostname 0.0.0.0 --port "$PORT" ${NEXT_DEV_FLAGS:-} > >(tee -a "$LOG") 2>&1
