"""TextWorld games as a Gymnasium text environment, for scripts/env_bridge.py:

    python scripts/env_bridge.py textworld_env:TextWorldEnv --kwargs '{"games_dir": ".cache/textworld/games"}'

(with scripts/envs on PYTHONPATH). `reset(options={"game": "train/g001.z8"})` starts that game; the reward of a
step is the score it gained, and `max_reward` (in reset's info) is the game's maximum score, so an episode scores 1
when it wins. TextWorld's own API returns (state, score, done); this class gives Gymnasium's five values.
"""
import os
import re

import gymnasium
import textworld

BANNER = set(" _|\\/$<>")


def clean(text):
    """The game's text without the title banner, the prompt line with its status bar, and runs of blank lines."""
    lines = [l.rstrip() for l in text.splitlines() if not (l.strip() and set(l) <= BANNER) and not l.lstrip().startswith(">")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def command(action):
    """The model's turn as a game command: its first non-empty line, without a leading '>' or a final period."""
    for line in str(action).splitlines():
        line = line.strip().lstrip(">").strip().rstrip(".").strip()
        if line:
            return line.lower()
    return "look"


class TextWorldEnv(gymnasium.Env):
    def __init__(self, games_dir="."):
        self.games_dir = games_dir
        self.game = None
        self.score = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        game = (options or {}).get("game")
        if not game:
            raise ValueError("reset needs options={'game': PATH} (a .z8 file under games_dir)")
        if self.game is not None:
            self.game.close()
        infos = textworld.EnvInfos(max_score=True, won=True, lost=True)
        self.game = textworld.start(os.path.join(self.games_dir, game), request_infos=infos)
        state = self.game.reset()
        self.score = 0
        return clean(state.feedback), {"max_reward": state.max_score}

    def step(self, action):
        state, score, done = self.game.step(command(action))
        reward, self.score = score - self.score, score
        return clean(state.feedback), reward, bool(done), False, {"won": state.won, "lost": state.lost}

    def close(self):
        if self.game is not None:
            self.game.close()
            self.game = None
