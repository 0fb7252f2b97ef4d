#!/usr/bin/env bash
# Episodes per minute with tools behind another process, on the same arithmetic tasks and greedy sampling:
#   builtin     the built-in calculator (in process)
#   mcp-pypi    mcp-server-calculator from PyPI (its `calculate` tool), one server shared by the run
#   mcp-0ms     a minimal stdio MCP server (scripts/dev/bench_tool_server.py), one per episode, answering at once
#   mcp-200ms   the same server sleeping 200 ms before every answer
# Waiting episodes leave the decoding batch: mcp-200ms's tokens/s should stay near mcp-0ms's, and its wall time far
# below the blocking bound (every call's 200 ms one after another). Usage: scripts/dev/bench-tools.sh [TASKS_PER]
set -euo pipefail
cd "$(dirname "$0")/../.."
per="${1:-40}"
out=runs/bench-tools
mkdir -p "$out"
bin="$(bash scripts/mcp-servers.sh)"
cargo build --release --quiet
ad=./target/release/autodidact
$ad tasks write --suites arithmetic --difficulties 1,2 --tasks-per "$per" --split test --out "$out/builtin.jsonl" > /dev/null
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for name, tool in [("mcp-pypi", "calculate"), ("mcp-0ms", "calculator"), ("mcp-200ms", "calculator")]:
    with open(f"{out}/builtin.jsonl") as f, open(f"{out}/{name}.jsonl", "w") as g:
        for line in f:
            t = json.loads(line)
            t.update(suite="mcp", tools=[tool], data={"kind": "mcp", "server": name})
            t.pop("reference", None)
            g.write(json.dumps(t) + "\n")
PY
cat > "$out/servers.toml" <<TOML
[servers.mcp-pypi]
command = "$bin/mcp-server-calculator"
scope = "shared"
[servers.mcp-0ms]
command = "$bin/python"
args = ["scripts/dev/bench_tool_server.py", "0"]
[servers.mcp-200ms]
command = "$bin/python"
args = ["scripts/dev/bench_tool_server.py", "200"]
TOML
# Every arm gets the arithmetic prompt with its two examples, calling the arm's tool by its name.
sed 's/"calculator"/"calculate"/g' prompts/arithmetic.md > "$out/prompt-calculate.md"
printf '%-10s %9s %7s %12s %9s %9s %10s %12s\n' arm episodes solved "episodes/min" "tokens/s" seconds "tool calls" "blocking s"
for arm in builtin mcp-pypi mcp-0ms mcp-200ms; do
  rm -f "$out/$arm.out.jsonl"
  prompt=prompts/arithmetic.md
  [ "$arm" = mcp-pypi ] && prompt="$out/prompt-calculate.md"
  $ad rollout --task-file "$out/$arm.jsonl" --mcp-config "$out/servers.toml" --prompt-file "mcp=$prompt" \
    --temperature 0 --samples 1 --max-active 32 --out "$out/$arm.out.jsonl" --json > "$out/$arm.summary.json" 2> /dev/null
  python3 - "$out" "$arm" <<'PY'
import json, sys
out, arm = sys.argv[1:]
s = json.load(open(f"{out}/{arm}.summary.json"))
calls = sum(json.loads(l)["counts"]["tool_calls"] for l in open(f"{out}/{arm}.out.jsonl"))
block = calls * 0.2 if arm == "mcp-200ms" else 0
print(f"{arm:<10} {s['episodes_run']:>9} {s['successes_run']:>7} {s['episodes_per_minute']:>12.1f} {s['generated_tokens_per_second']:>9.1f} {s['seconds']:>9.1f} {calls:>10} {block:>12.1f}")
PY
done
