#!/usr/bin/env bash
# The RL comparison: five arms x seeds of configs/compare-rl.toml, then `autodidact compare`.
#
#   scripts/dev/compare-rl.sh             # every arm, seeds 0 1 2 (each arm and seed 10-21 minutes alone on 2 cores)
#   SEEDS="0" ARMS="filtered sdar-b5" scripts/dev/compare-rl.sh
#   DEV=0 OUT=runs/compare-rl-nodev scripts/dev/compare-rl.sh   # without evaluating the dev split, on which nothing
#                                         # in the comparison decides (about 25 minutes less in all)
#
# Arms: filtered (the filtered loop), hinted (+ hinted rollouts), grpo, sdar-b5 (SDAR, beta 5), sdar-b0 (flat
# gate); also, as diagnostics outside the default set, grpo-p0 (GRPO without the invalid-step penalty) and grpo-f1
# (GRPO with rl.std_floor = 1: a group whose rewards differ only by penalties gets small advantages) and
# grpo-small (grpo-p0 in smaller, clipped steps: lr 3e-4, 2 epochs, 2 groups per step); and grpo-sft (an SFT+RL
# hybrid: grpo-p0's update, then the filtered loop's training on the round's kept successes) and grpo-w4 (GRPO
# with the learning rate warmed up over each round's first 4 steps; grpo-p0w4: the same without the penalty). Each arm
# and seed is its own run folder runs/compare-rl/<arm>-s<seed> (resumable: rerun the same command after an
# interruption). Every arm gets the same rollouts per round (tasks x samples) and rounds; the
# report gives each arm's wall time. Round 0 (the base model's evaluation) is the same for every run, and round
# 1's rollout for every arm of a seed, so each is computed once and copied (the first run of a seed is charged
# its time).
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=${SEEDS:-"0 1 2"}
ARMS=${ARMS:-"filtered hinted grpo sdar-b5 sdar-b0"}
OUT=${OUT:-runs/compare-rl}
BASE=configs/compare-rl.toml
# BIN may name a frozen copy of the binary, so that rebuilding during a long comparison cannot mix versions.
BIN=${BIN:-target/release/autodidact}
[ -x "$BIN" ] || cargo build --release
mkdir -p "$OUT/configs"

# set_key FILE SECTION KEY VALUE: replaces KEY's value inside [SECTION] (top level: SECTION "").
set_key() {
  awk -v sec="$2" -v key="$3" -v val="$4" '
    /^\[/ { cur = substr($0, 2, length($0) - 2) }
    cur == sec && $1 == key && $2 == "=" { print key " = " val; found = 1; next }
    { print }
    END { if (!found) { print "set_key: no " key " in [" sec "]" > "/dev/stderr"; exit 1 } }' "$1" > "$1.tmp" && mv "$1.tmp" "$1"
}

config_for() { # arm seed -> path
  local arm=$1 seed=$2 f="$OUT/configs/$1-s$2.toml"
  cp "$BASE" "$f"
  set_key "$f" "" name "\"$arm-s$seed\""
  echo "runs_dir = \"$OUT\"" | cat - "$f" > "$f.tmp" && mv "$f.tmp" "$f"
  set_key "$f" rollout seed "$seed"
  if [ "${DEV:-1}" = 0 ]; then sed -i 's/^\[eval\]$/[eval]\ndev = false/' "$f"; fi
  set_key "$f" train seed "$seed"
  case $arm in
    filtered) ;;
    hinted) set_key "$f" rollout hinted true ;;
    grpo) set_key "$f" train objective '"grpo"' ;;
    grpo-p0) set_key "$f" train objective '"grpo"'; set_key "$f" rl invalid_penalty 0.0 ;;
    grpo-f1) set_key "$f" train objective '"grpo"'; sed -i 's/^\[rl\]$/[rl]\nstd_floor = 1.0/' "$f" ;;
    grpo-small) set_key "$f" train objective '"grpo"'; set_key "$f" rl invalid_penalty 0.0; set_key "$f" rl lr 3e-4
      set_key "$f" rl epochs 2; set_key "$f" rl groups_per_step 2 ;;
    grpo-w4) set_key "$f" train objective '"grpo"'; sed -i 's/^\[rl\]$/[rl]\nwarmup = 4/' "$f" ;;
    grpo-p0w4) set_key "$f" train objective '"grpo"'; set_key "$f" rl invalid_penalty 0.0
      sed -i 's/^\[rl\]$/[rl]\nwarmup = 4/' "$f" ;;
    grpo-sft) set_key "$f" train objective '"grpo"'; set_key "$f" rl invalid_penalty 0.0
      sed -i 's/^\[rl\]$/[rl]\nthen_sft = true/' "$f" ;;
    sdar-b5) set_key "$f" train objective '"sdar"' ;;
    sdar-b0) set_key "$f" train objective '"sdar"'; set_key "$f" rl sdar_beta 0.0 ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
  esac
  echo "$f"
}

# Round 0 evaluates the base model, the same for every arm and seed: reuse one that a previous invocation finished.
round0=$(ls -d "$OUT"/*/round-000/round.json 2>/dev/null | head -1 | xargs -r dirname || true)
for seed in $SEEDS; do
  for arm in $ARMS; do
    cfg=$(config_for "$arm" "$seed")
    run="$OUT/$arm-s$seed"
    if [ -n "$round0" ] && [ ! -e "$run/round-000" ]; then
      mkdir -p "$run" && cp -r "$round0" "$run/round-000"
    fi
    # Round 1's rollout samples the base model with the seed's stream, so it is the same in every arm of a seed
    # (hinted samples apart): sampled once per seed and copied, from a run whose round 1 is finished.
    rollout1=$(ls -d "$OUT"/*-s"$seed"/round-001/round.json 2>/dev/null | head -1 | xargs -r dirname || true)
    if [ -n "$rollout1" ] && [ ! -e "$run/round-001" ]; then
      mkdir -p "$run/round-001" && cp -r "$rollout1/rollout" "$run/round-001/rollout"
    fi
    echo "=== $arm, seed $seed ($(date +%H:%M:%S))"
    "$BIN" loop --config "$cfg"
    round0="$run/round-000"
  done
done
runs=()
for arm in $ARMS; do for seed in $SEEDS; do runs+=("$OUT/$arm-s$seed"); done; done
"$BIN" compare "${runs[@]}" --out "$OUT"
