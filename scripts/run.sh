#!/usr/bin/env bash
# Runs CodeKraft with its embedded defaults: SQLite in ./data, built-in accounts, the offline model
# (unless GEMINI_API_KEY or MODEL_PROVIDER is set), local sandboxes. Server and web client on
# http://127.0.0.1:8080 (BIND to change), previews on http://{id}.localhost:8081 (PREVIEW_BIND).
# Settings come from the environment or a .env file.
set -euo pipefail
cd "$(dirname "$0")/.."
# Local sandboxes run Next.js 16, which needs Node.js 20.9 or newer.
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 9) ? 0 : 1)' 2>/dev/null; then
  echo "warning: local sandboxes need Node.js >= 20.9 with npm on the PATH (found: $(node --version 2>/dev/null || echo none))" >&2
fi
source scripts/sandbox-jail-deps.sh
exec cargo run --release --locked -- serve "$@"
