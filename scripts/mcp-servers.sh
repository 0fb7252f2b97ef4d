#!/usr/bin/env bash
# Installs the MCP servers the tests and demonstrations use, pinned, into .cache/mcp-venv (ignored by git), and
# prints that environment's bin folder. Idempotent: a complete install is reused.
#   mcp==1.30.0 (mcp-server-sqlite 2025.4.25 fails to start under mcp 2.x), mcp-server-time==2026.1.26 (the newest
#   that accepts mcp 1.30.0), mcp-server-sqlite==2025.4.25, mcp-server-calculator==0.2.1 (scripts/dev/bench-tools.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec bash "$root/scripts/pinned-venv.sh" "$root/.cache/mcp-venv" "mcp==1.30.0" "mcp-server-time==2026.1.26" "mcp-server-sqlite==2025.4.25" \
  "mcp-server-calculator==0.2.1"
