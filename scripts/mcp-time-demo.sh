#!/usr/bin/env bash
# The mcp-server-time demonstration: installs the server (pinned, scripts/mcp-servers.sh), generates the tasks
# into .cache/mcp-time/, and runs the loop of configs/mcp-time.toml (runs/mcp-time/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
bash scripts/mcp-servers.sh > /dev/null
python3 scripts/mcp_time_tasks.py .cache/mcp-time
cargo build --release
cargo run --release --quiet -- loop --config configs/mcp-time.toml
cat runs/mcp-time/report.md
