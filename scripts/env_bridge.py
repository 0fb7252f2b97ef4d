#!/usr/bin/env python3
"""Serves a Gymnasium text environment to autodidact: JSON-RPC 2.0 over stdio, one message per line.

    python scripts/env_bridge.py my_package.my_module:make_env [--kwargs '{"difficulty": 2}']
    python scripts/env_bridge.py --gym-id MyTextEnv-v0

The target is a `gymnasium.Env` class or a function returning one (called with --kwargs), or a registered id. Its
observations and actions are strings. The protocol (tasks/README.md):

    reset {task, seed, game}  -> {observation, max_reward?, tools?}
    step  {action}            -> {observation, reward, terminated, truncated}

`reset` calls env.reset(seed=seed, options={"task": task, "game": game}); `max_reward` and `tools` are read from
the info dict when the environment puts them there. `step` calls env.step(action) and accepts Gymnasium's five
values or the older four (obs, reward, done, info: `done` becomes `terminated`). Anything the environment prints
goes to stderr, so stdout carries only the protocol.
"""
import argparse
import importlib
import json
import math
import sys
import traceback


def load(target, kwargs, gym_id):
    if gym_id:
        import gymnasium

        return gymnasium.make(gym_id, **kwargs)
    module, _, name = target.partition(":")
    if not name:
        raise SystemExit(f"env_bridge: expected MODULE:NAME, got `{target}`")
    obj = getattr(importlib.import_module(module), name)
    return obj(**kwargs)


def text(obs):
    if isinstance(obs, str):
        return obs
    raise TypeError(f"the environment's observation is a {type(obs).__name__}, not a string")


def number(x, what):
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"the environment's {what} is not a number: {x!r}")
    if not math.isfinite(v):
        raise TypeError(f"the environment's {what} is not finite: {x!r}")
    return v


def serve(env, out):
    def send(msg):
        out.write(json.dumps(msg) + "\n")
        out.flush()

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as e:
            send({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": f"parse error: {e}"}})
            continue
        if "id" not in msg:
            continue
        params = msg.get("params") or {}
        try:
            if msg.get("method") == "reset":
                options = {k: params[k] for k in ("task", "game") if params.get(k) is not None}
                obs, info = env.reset(seed=params.get("seed"), options=options)
                result = {"observation": text(obs)}
                info = info or {}
                if info.get("max_reward") is not None:
                    result["max_reward"] = number(info["max_reward"], "max_reward")
                if info.get("tools"):
                    result["tools"] = info["tools"]
            elif msg.get("method") == "step":
                r = env.step(params.get("action"))
                if len(r) == 5:
                    obs, reward, terminated, truncated, _ = r
                else:
                    obs, reward, terminated, _ = r
                    truncated = False
                result = {"observation": text(obs), "reward": number(reward, "reward"), "terminated": bool(terminated), "truncated": bool(truncated)}
            else:
                send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": f"unknown method `{msg.get('method')}`"}})
                continue
        except Exception as e:  # the environment's failure is an answer, not the bridge's end
            traceback.print_exc(file=sys.stderr)
            send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32000, "message": f"{type(e).__name__}: {e}"}})
            continue
        send({"jsonrpc": "2.0", "id": msg["id"], "result": result})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("target", nargs="?", help="MODULE:NAME of a gymnasium.Env class or factory")
    p.add_argument("--gym-id", help="a registered Gymnasium id instead of MODULE:NAME")
    p.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments for the class, factory or id")
    a = p.parse_args()
    if not a.target and not a.gym_id:
        p.error("give MODULE:NAME or --gym-id")
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever the environment prints stays off the protocol
    env = load(a.target, json.loads(a.kwargs), a.gym_id)
    try:
        serve(env, out)
    finally:
        env.close()


if __name__ == "__main__":
    main()
