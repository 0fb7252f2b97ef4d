//! `grid`: navigate a small maze with `move` (up/down/left/right) and `look`. The map is in the instruction;
//! the goal is reached when the agent stands on it (then it answers `done`). Breadth-first search gives the
//! shortest plan. Level 1: few walls, goal next to the start. Level 2: a few walls, 2-4 moves. Level 3: more
//! walls, 5-9 moves, usually with a detour.
use std::collections::VecDeque;

use rand::Rng;
use serde_json::{json, Value};

use super::{arg_str, tool_spec, unknown_tool, Draft, Sandbox, Suite, SuiteError, TaskRng};
use crate::data::{Expected, GoalState, Reference, Task, TaskData, ToolCall};

pub struct Grid;

const DIRS: [(&str, isize, isize); 4] = [("up", -1, 0), ("down", 1, 0), ("left", 0, -1), ("right", 0, 1)];

#[derive(Debug, Clone)]
pub struct Maze {
    walls: Vec<Vec<bool>>,
    goal: [usize; 2],
}

impl Maze {
    pub fn from_rows(rows: &[String], goal: [usize; 2]) -> Result<Self, String> {
        let walls: Vec<Vec<bool>> = rows.iter().map(|r| r.chars().map(|c| c == '#').collect()).collect();
        let width = walls.first().map_or(0, Vec::len);
        if walls.is_empty() || width == 0 || walls.iter().any(|r| r.len() != width) {
            return Err("grid rows must be non-empty and of equal length".into());
        }
        if walls.len() > 32 || width > 32 {
            return Err("grid larger than 32x32".into());
        }
        let m = Maze { walls, goal };
        if !m.open(goal) {
            return Err("the goal must be an open cell".into());
        }
        Ok(m)
    }

    fn open(&self, [r, c]: [usize; 2]) -> bool {
        self.walls.get(r).and_then(|row| row.get(c)).is_some_and(|w| !w)
    }

    fn step(&self, [r, c]: [usize; 2], dr: isize, dc: isize) -> Option<[usize; 2]> {
        let next = [r.checked_add_signed(dr)?, c.checked_add_signed(dc)?];
        self.open(next).then_some(next)
    }

    /// Shortest list of moves from `start` to the goal.
    pub fn shortest_path(&self, start: [usize; 2]) -> Option<Vec<&'static str>> {
        let (h, w) = (self.walls.len(), self.walls[0].len());
        // For each cell: the cell it was reached from and the move that did it.
        type Back = Option<([usize; 2], &'static str)>;
        let mut prev: Vec<Vec<Back>> = vec![vec![None; w]; h];
        let mut seen = vec![vec![false; w]; h];
        seen[start[0]][start[1]] = true;
        let mut queue = VecDeque::from([start]);
        while let Some(p) = queue.pop_front() {
            if p == self.goal {
                let mut moves = Vec::new();
                let mut cur = p;
                while let Some((from, dir)) = prev[cur[0]][cur[1]] {
                    moves.push(dir);
                    cur = from;
                }
                moves.reverse();
                return Some(moves);
            }
            for (name, dr, dc) in DIRS {
                if let Some(n) = self.step(p, dr, dc) {
                    if !seen[n[0]][n[1]] {
                        seen[n[0]][n[1]] = true;
                        prev[n[0]][n[1]] = Some((p, name));
                        queue.push_back(n);
                    }
                }
            }
        }
        None
    }

    pub fn render(&self, at: [usize; 2]) -> String {
        let mut out = String::new();
        for (r, row) in self.walls.iter().enumerate() {
            for (c, wall) in row.iter().enumerate() {
                out.push(if [r, c] == at {
                    'A'
                } else if [r, c] == self.goal {
                    'G'
                } else if *wall {
                    '#'
                } else {
                    '.'
                });
            }
            out.push('\n');
        }
        out.pop();
        out
    }
}

pub struct GridSandbox {
    maze: Maze,
    at: [usize; 2],
}

impl GridSandbox {
    fn position(&self) -> String {
        let mut s = format!("You are at row {}, column {}.", self.at[0] + 1, self.at[1] + 1);
        if self.at == self.maze.goal {
            s.push_str(" You reached the goal.");
        }
        s
    }
}

impl Sandbox for GridSandbox {
    fn call(&mut self, call: &ToolCall) -> Result<String, String> {
        match call.name.as_str() {
            "move" => {
                let dir = arg_str(call, "direction")?.trim().to_ascii_lowercase();
                let &(name, dr, dc) = DIRS.iter().find(|d| d.0 == dir).ok_or_else(|| format!("unknown direction `{dir}`; use up, down, left or right"))?;
                match self.maze.step(self.at, dr, dc) {
                    Some(next) => {
                        self.at = next;
                        Ok(format!("You moved {name}. {}", self.position()))
                    }
                    // Bumping into a wall is an observation, not a failure: the state is unchanged.
                    None => Ok(format!("A wall blocks the way {name}. {}", self.position())),
                }
            }
            "look" => Ok(format!("{}\n{}", self.maze.render(self.at), self.position())),
            _ => Err(unknown_tool(call)),
        }
    }
    fn state(&self) -> Option<GoalState> {
        Some(GoalState::Grid { position: self.at })
    }
}

impl Suite for Grid {
    fn name(&self) -> &'static str {
        "grid"
    }
    fn difficulties(&self) -> Option<std::ops::RangeInclusive<u8>> {
        Some(1..=3)
    }
    fn tool_names(&self) -> Option<&'static [&'static str]> {
        Some(&["move", "look"])
    }
    fn tools(&self, _difficulty: u8) -> Vec<Value> {
        vec![
            tool_spec(
                "move",
                "Move one cell in a direction. Walls and the map edge block moves.",
                json!({"direction": {"type": "string", "enum": ["up", "down", "left", "right"]}}),
                &["direction"],
            ),
            tool_spec("look", "Show the map and your position.", json!({}), &[]),
        ]
    }
    fn max_turns(&self, difficulty: u8) -> u32 {
        match difficulty {
            1 => 4,
            2 => 8,
            _ => 16,
        }
    }
    fn draft(&self, rng: &mut TaskRng, difficulty: u8) -> Result<Draft, SuiteError> {
        let (size, density, dist) = match difficulty {
            1 => (rng.random_range(3..6), 0.2, 1..=1),
            2 => (5, 0.15, 2..=4),
            _ => (rng.random_range(6..8), 0.28, 5..=9),
        };
        loop {
            let rows: Vec<String> = (0..size).map(|_| (0..size).map(|_| if rng.random_bool(density) { '#' } else { '.' }).collect()).collect();
            let open: Vec<[usize; 2]> = (0..size).flat_map(|r| (0..size).map(move |c| [r, c])).filter(|&[r, c]| rows[r].as_bytes()[c] == b'.').collect();
            if open.len() < 2 {
                continue;
            }
            let start = open[rng.random_range(0..open.len())];
            let goal = open[rng.random_range(0..open.len())];
            let Ok(maze) = Maze::from_rows(&rows, goal) else {
                continue;
            };
            let Some(moves) = maze.shortest_path(start) else {
                continue;
            };
            if !dist.contains(&moves.len()) {
                continue;
            }
            let instruction = format!(
                "Reach the goal G on this map. A is you, # is a wall, rows go down and columns go right.\n{}\nWhen you stand on G, reply Answer: done.",
                maze.render(start)
            );
            let calls = moves.iter().map(|d| ToolCall::new("move", json!({ "direction": d }))).collect();
            return Ok(Draft {
                instruction,
                data: TaskData::Grid { rows, start, goal },
                expected: Expected::State { state: GoalState::Grid { position: goal }, answer: None },
                reference: Reference { calls, answer: "done".into(), actions: Vec::new() },
            });
        }
    }
    fn sandbox(&self, task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        let bad = |m: String| SuiteError::BadTask { task: task.id.clone(), message: m };
        match &task.data {
            TaskData::Grid { rows, start, goal } => {
                let maze = Maze::from_rows(rows, *goal).map_err(bad)?;
                if !maze.open(*start) {
                    return Err(bad("the start must be an open cell".into()));
                }
                Ok(Box::new(GridSandbox { maze, at: *start }))
            }
            _ => Err(bad("`data` must be of kind `grid`".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walls_block_and_bfs_detours() {
        let rows: Vec<String> = ["...", ".#.", "..."].iter().map(|s| s.to_string()).collect();
        let maze = Maze::from_rows(&rows, [2, 1]).unwrap();
        assert_eq!(maze.shortest_path([0, 1]).unwrap().len(), 4);
        let mut s = GridSandbox { maze, at: [0, 1] };
        let mv = |d: &str| ToolCall::new("move", json!({ "direction": d }));
        assert!(s.call(&mv("down")).unwrap().starts_with("A wall blocks"));
        assert!(s.call(&mv("up")).unwrap().starts_with("A wall blocks"));
        assert_eq!(s.state(), Some(GoalState::Grid { position: [0, 1] }));
        for d in ["left", "down", "down", "right"] {
            s.call(&mv(d)).unwrap();
        }
        assert_eq!(s.state(), Some(GoalState::Grid { position: [2, 1] }));
        assert!(s.call(&ToolCall::new("look", json!({}))).unwrap().contains("reached the goal"));
    }
}
