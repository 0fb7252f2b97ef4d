#!/usr/bin/env bash
# The SQLite MCP demonstration: installs mcp-server-sqlite (pinned, scripts/mcp-servers.sh), generates the shop
# database and its tasks into .cache/mcp-sqlite/, and runs the loop of configs/mcp-sqlite.toml (runs/mcp-sqlite/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
bash scripts/mcp-servers.sh > /dev/null
python3 scripts/mcp_sqlite_tasks.py .cache/mcp-sqlite
cargo build --release
cargo run --release --quiet -- loop --config configs/mcp-sqlite.toml
cat runs/mcp-sqlite/report.md
