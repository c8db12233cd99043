#!/usr/bin/env bash
# Runs CodeKraft with its embedded defaults: SQLite in ./data, built-in accounts, the offline model
# (unless GEMINI_API_KEY or MODEL_PROVIDER is set), local sandboxes. Server and web client on
# http://127.0.0.1:8080 (BIND to change). Settings come from the environment or a .env file.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked -- serve "$@"
