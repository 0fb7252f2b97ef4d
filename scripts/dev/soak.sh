#!/usr/bin/env bash
# Kill soak: runs a small loop config once without interruption, then again under another name while SIGKILLing
# it at KILLS random moments (default 20) spread over its stages, resuming after each kill; at the end every
# artefact of the two runs is compared: adapters, datasets, trajectories (without wall times), eval.json and
# round records (without wall times), and report.md (without its minutes column).
#
#   scripts/dev/soak.sh                 # seed 1, 20 kills
#   SOAK_SEED=7 KILLS=30 scripts/dev/soak.sh
#
# The random kills hit one copy of the run; a second copy is killed once at each of five fault points
# (src/fault.rs: while a filter writes its files, before a round record, while the report is written). Both are
# compared with the uninterrupted run. Not part of the default test run (about 10-20 minutes on 2
# cores). Exits non-zero on any difference.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/fetch-model.sh
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/autodidact"
seed="${SOAK_SEED:-1}"
kills="${KILLS:-20}"
work="$(mktemp -d /tmp/autodidact-soak.XXXXXX)"
echo "soak: seed $seed, $kills kills, work folder $work"

config() {
  cat > "$work/$1.toml" <<EOF
name = "$1"
runs_dir = "$work/runs"
model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
rounds = 2
[tasks]
suites = ["arithmetic"]
difficulties = [1]
train_per = 8
dev_per = 3
test_per = 3
[rollout]
samples = 4
# Small batches: episodes finish one after another, so a run killed every few seconds still makes progress
# (rollouts resume episode by episode).
max_active = 4
[eval]
samples = 2
pass_k = [1, 2]
without_fewshot = false
[train]
epochs = 2
batch_size = 2
save_every = 1
EOF
}
config straight
config soaked
config pointed

t0=$(date +%s.%N)
"$bin" loop --config "$work/straight.toml" > /dev/null 2> "$work/straight.log"
full=$(python3 -c "import time; print(time.time() - $t0)")
echo "uninterrupted run: ${full%.*} s"

# Kill moments: gaps drawn around full/kills seconds, so the kills spread over the whole run (a restart redoes
# at most the interrupted stage's unfinished part).
mapfile -t gaps < <(python3 -c "
import random; r = random.Random($seed)
print('\n'.join(f'{r.uniform(0.3, 1.7) * $full / $kills:.2f}' for _ in range($kills)))")
stage_of() {
  grep -Eo '^round [0-9]+/[0-9]+|^  (rollout|filter|train|eval|eval-dev|eval-nofewshot|gate)' "$1" | tail -1 | xargs || true
}
killed=0
declare -A hits=()
for gap in "${gaps[@]}"; do
  log="$work/attempt-$killed.log"
  "$bin" loop --config "$work/soaked.toml" > /dev/null 2> "$log" &
  pid=$!
  sleep "$gap"
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    killed=$((killed + 1))
    round=$(grep -Eo '^round [0-9]+' "$log" | tail -1 || true)
    stage="$(stage_of "$log")"
    [ -n "$stage" ] || stage="start-up"
    [ -n "$round" ] && [ "$stage" != "$round/2" ] && stage="$round, $stage"
    hits["$stage"]=$(( ${hits["$stage"]:-0} + 1 ))
    echo "kill $killed after ${gap}s: $stage"
  else
    wait "$pid" || { echo "the run failed before its kill:"; cat "$log"; exit 1; }
    echo "the run finished before kill $((killed + 1)); stopping early"
    break
  fi
done
"$bin" loop --config "$work/soaked.toml" > /dev/null 2> "$work/final.log"
# Then a second copy of the run is killed once at each fault point (src/fault.rs): the steps that last
# milliseconds (a filter's files, the round record, the report) are hit deterministically, each at its first
# occurrence in what is left of the run. (A separate copy, so the random kills above spread over the whole run.)
for point in filter:audit filter:dataset round:record report:md report:curves; do
  log="$work/point-$point.log"
  if AUTODIDACT_KILL_AT="$point" "$bin" loop --config "$work/pointed.toml" > /dev/null 2> "$log"; then
    echo "fault point $point: not reached"; continue
  fi
  grep -q "AUTODIDACT_KILL_AT=$point" "$log" || { echo "the run failed before fault point $point:"; cat "$log"; exit 1; }
  killed=$((killed + 1))
  round=$(grep -Eo '^round [0-9]+' "$log" | tail -1 || true)
  [ -n "$round" ] || round="after the last round"
  echo "kill $killed at fault point $point ($round)"
  hits["$round, $point"]=$(( ${hits["$round, $point"]:-0} + 1 ))
done
"$bin" loop --config "$work/pointed.toml" > /dev/null 2> "$work/final-pointed.log"
echo "kills per stage:"
for s in "${!hits[@]}"; do echo "  ${hits[$s]}  $s"; done | sort -k2

cat > "$work/compare.py" <<'PY'
import json, os, re, sys
a, b = sys.argv[1], sys.argv[2]
def files(root):
    out = set()
    for d, _, fs in os.walk(root):
        for f in fs:
            rel = os.path.relpath(os.path.join(d, f), root)
            if f.startswith('.') or '/checkpoint' in '/' + rel:
                continue  # locks, temporaries and training checkpoints (an interrupted run keeps its own)
            out.add(rel)
    return out
def norm(rel, data):
    if rel.endswith('trajectories.jsonl'):
        lines = [json.loads(l) for l in data.decode().splitlines()]
        for t in lines:
            t.pop('wall_ms', None)
        return json.dumps(sorted(lines, key=lambda t: (t['task_id'], t['sample_index'])), sort_keys=True)
    if rel.endswith('round.json'):
        r = json.loads(data)
        r.pop('seconds', None)
        for k in ('rollout', 'train'):
            if r.get(k):
                for f in ('episodes_per_minute', 'generated_tokens_per_second', 'tokens_per_second'):
                    r[k].pop(f, None)
        return json.dumps(r, sort_keys=True)
    if rel == 'metrics.jsonl' or rel.endswith('train/metrics.jsonl'):
        drop = {'seconds', 'episodes_per_minute', 'generated_tokens_per_second', 'train_tokens_per_second', 'tokens_per_s', 'elapsed_s', 'step_s'}
        return json.dumps([{k: v for k, v in json.loads(l).items() if k not in drop} for l in data.decode().splitlines()], sort_keys=True)
    if rel == 'report.md':
        lines = data.decode().splitlines()[1:]  # the title names the run
        return '\n'.join(re.sub(r'\| [0-9.]+ \|$', '| - |', l) for l in lines)
    if rel == 'config.toml':
        return re.sub(r'(?m)^name = .*$', '', data.decode())
    return data
fa, fb = files(a), files(b)
bad = sorted(fa ^ fb)
for rel in sorted(fa & fb):
    if norm(rel, open(os.path.join(a, rel), 'rb').read()) != norm(rel, open(os.path.join(b, rel), 'rb').read()):
        bad.append(rel)
print(f"compared {len(fa & fb)} files: {len(bad)} differ")
for rel in bad:
    print("  DIFFERS:", rel)
sys.exit(1 if bad else 0)
PY
status=0
for run in soaked pointed; do
  echo "$run vs straight:"
  python3 "$work/compare.py" "$work/runs/straight" "$work/runs/$run" || status=1
done
[ "$status" = 0 ] || { echo "soak FAILED: artefacts differ (work folder $work)"; exit 1; }
echo "soak passed: $killed kills, identical artefacts (work folder $work)"
