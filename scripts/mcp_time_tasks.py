"""Generates the mcp-server-time demonstration's tasks: time conversions between zones without daylight saving
time, so every answer holds on any date. Deterministic (seed 0). Usage: mcp_time_tasks.py OUT_DIR"""
import json
import random
import sys
from pathlib import Path

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
# UTC offsets in minutes; none of these zones observes daylight saving time.
zones = {"UTC": 0, "Asia/Tokyo": 540, "Asia/Kolkata": 330, "Asia/Dubai": 240, "Asia/Shanghai": 480, "Asia/Singapore": 480,
         "Africa/Nairobi": 180, "Asia/Kathmandu": 345, "Asia/Karachi": 300, "America/Bogota": -300, "America/Lima": -300,
         "Pacific/Honolulu": -600, "Asia/Jakarta": 420, "Africa/Lagos": 60, "America/Phoenix": -420}
names = sorted(zones)
seen = set()
tasks = []
while len(tasks) < 200:
    a, b = rng.sample(names, 2)
    h, m = rng.randrange(24), rng.choice([0, 15, 30, 45])
    if (a, b, h, m) in seen:
        continue
    seen.add((a, b, h, m))
    t = (h * 60 + m + zones[b] - zones[a]) % (24 * 60)
    answer = f"{t // 60:02d}:{t % 60:02d}"
    tasks.append((f"It is {h:02d}:{m:02d} in {a}. What time is it in {b} (HH:MM)?", answer))
counts = {}
files = {s: open(out / f"time.{s}.jsonl", "w") for s in ("train", "dev", "test")}
for i, (q, a) in enumerate(tasks):
    s = "test" if i < 50 else ("dev" if i < 70 else "train")
    files[s].write(json.dumps({"id": f"time-{i:04d}", "suite": "mcp", "split": s, "difficulty": 1, "instruction": q, "tools": ["convert_time"],
                               "data": {"kind": "mcp", "server": "time"},
                               "expected": {"kind": "answer", "answer": a, "matcher": {"type": "exact"}}, "max_turns": 3}) + "\n")
    counts[s] = counts.get(s, 0) + 1
print(f"tasks: {counts}")
