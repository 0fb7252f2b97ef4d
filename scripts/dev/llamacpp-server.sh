#!/usr/bin/env bash
# Rollouts through llama.cpp's OpenAI-compatible server (llama-cpp-python's `[server]` extra, built from source)
# on loopback, beside the same rollout in-process and through `autodidact serve`: episodes per minute and success
# of each, same machine, same tasks, same seed. Then a small loop config whose rollouts and evaluations go through
# llama.cpp's server (`[backend]`, load_adapters = false: llama.cpp cannot load our adapters at run time, so its
# rounds sample from the base model while training happens here).
#
#   scripts/dev/llamacpp-server.sh
#
# llama-cpp-python is built into .cache/llamacpp-native (about 15 minutes the first time, shared with
# scripts/dev/compare-llamacpp.sh). Nothing else on the machine should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/fetch-model.sh
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
threads="${THREADS:-2}"
source scripts/dev/llamacpp-venv.sh
llamacpp_venv native "-DGGML_NATIVE=ON" server
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/autodidact"
work="$(mktemp -d /tmp/autodidact-llamacpp.XXXXXX)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_up() {
  for _ in $(seq 120); do curl -sf "$1/v1/models" > /dev/null && return 0; sleep 1; done
  echo "no server at $1"; exit 1
}

lport=$(free_port)
"$venv/bin/python" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$lport" --n_ctx 4096 \
  --n_threads "$threads" --n_threads_batch "$threads" > "$work/llamacpp.log" 2>&1 &
pids+=($!)
aport=$(free_port)
"$bin" serve --model "$model" --port "$aport" > "$work/serve.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$lport"
wait_up "http://127.0.0.1:$aport"
echo "cpu: $(grep -qw avx512f /proc/cpuinfo && echo avx512f || { grep -qw avx2 /proc/cpuinfo && echo avx2; } || echo baseline), $threads threads; work folder $work"

tasks=(--suites arithmetic,units --difficulties 1 --tasks-per 8 -k 2 --seed 0 --temperature 0.7 --top-p 1)
run() {  # name, extra args; the servers idle meanwhile
  "$bin" rollout "${tasks[@]}" --model "$model" --out "$work/$1.jsonl" --json "${@:2}" 2> "$work/$1.err" | tail -1 > "$work/$1.json"
  python3 - "$1" "$work/$1.json" "$work/$1.jsonl" <<'PY'
import json, sys
s = json.load(open(sys.argv[2]))
ts = [json.loads(l) for l in open(sys.argv[3])]
b = ts[0].get("backend") or {}
print(f"{sys.argv[1]:>12}: {s['episodes_run']} episodes, {s['successes_run']} solved, {s['episodes_per_minute']:.1f} episodes/min, "
      f"{s['generated_tokens_per_second']:.1f} generated tokens/s; server ids: {b.get('token_ids', '-')}, server log-probs: {b.get('logprobs', '-')}")
PY
}
# In-process last, so the servers are not holding memory bandwidth while it runs (they are idle either way).
run llamacpp --backend-url "http://127.0.0.1:$lport" --max-active 8
run serve --backend-url "http://127.0.0.1:$aport"
run in-process

loop_config() {  # name, [backend] lines
  cat > "$work/$1.toml" <<EOF
name = "$1"
runs_dir = "$work/runs"
model = "$model"
rounds = 1
[tasks]
suites = ["arithmetic"]
difficulties = [1]
train_per = 8
dev_per = 4
test_per = 8
[rollout]
samples = 2
[eval]
samples = 2
without_fewshot = false
[train]
epochs = 2
$2
EOF
  "$bin" loop --config "$work/$1.toml" 2> "$work/$1.err" > /dev/null || { cat "$work/$1.err"; exit 1; }
  python3 - "$1" "$work/runs/$1" <<'PY'
import json, sys
name, run = sys.argv[1], sys.argv[2]
recs = [json.load(open(f"{run}/round-{r:03d}/round.json")) for r in (0, 1)]
def success(report):
    row = next(r for r in report["rows"] if r["suite"] == "all")
    return f"{row['success_rate'] * 100:.1f}% of {row['episodes']}"
print(f"loop {name:>16}: " + ", ".join(f"round {i}: dev {success(r['dev'])}, test {success(r['test'])}" for i, r in enumerate(recs))
      + f"; {sum(r.get('seconds', 0) for r in recs) / 60:.1f} min")
PY
}
# A small loop three ways: in-process, through `autodidact serve` (each round's adapter loaded into it), and through
# llama.cpp's server (which cannot load our adapters: its round 1 samples the base model; training happens here).
loop_config in-process ""
loop_config through-serve "[backend]
urls = [\"http://127.0.0.1:$aport\"]"
loop_config through-llamacpp "[backend]
urls = [\"http://127.0.0.1:$lport\"]
load_adapters = false
concurrency = 8"
