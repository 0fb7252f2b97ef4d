#!/usr/bin/env bash
# The MCP demonstrations: `scripts/mcp-demo.sh sqlite` (questions about a generated shop database, answered with
# mcp-server-sqlite) or `scripts/mcp-demo.sh time` (time-zone conversions with mcp-server-time). Installs the servers
# (pinned, scripts/mcp-servers.sh), generates the tasks into .cache/mcp-NAME/ and runs the loop of
# configs/mcp-NAME.toml into runs/mcp-NAME/.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-}"
case "$name" in
  sqlite | time) ;;
  *) echo "usage: scripts/mcp-demo.sh sqlite|time" >&2; exit 2 ;;
esac
bash scripts/fetch-model.sh
bash scripts/mcp-servers.sh > /dev/null
python3 "scripts/mcp_${name}_tasks.py" ".cache/mcp-$name"
cargo build --release
cargo run --release --quiet -- loop --config "configs/mcp-$name.toml"
cat "runs/mcp-$name/report.md"
