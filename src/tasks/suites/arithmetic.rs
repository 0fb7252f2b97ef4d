//! `arithmetic`: word problems answered with the `calculator` tool. Level 1 is one operation, level 2 two,
//! level 3 three or more with decimals. One calculator call always suffices, so the reference plan is one
//! call: difficulty grows in what the expression must contain, not in the number of calls.
use rand::Rng;
use serde_json::{json, Value};

use super::{pick, tool_spec, unknown_tool, Draft, Sandbox, Suite, SuiteError, TaskRng};
use crate::data::{AnswerSpec, Expected, Matcher, Reference, Task, TaskData, ToolCall};
use crate::tools::rational::{self, Rational};

pub struct Arithmetic;

pub fn calculator_spec() -> Value {
    tool_spec(
        "calculator",
        "Evaluate an arithmetic expression exactly. Supports numbers, + - * /, and parentheses.",
        json!({"expression": {"type": "string", "description": "for example (12 + 3) * 4"}}),
        &["expression"],
    )
}

/// Runs the calculator tool.
pub fn calculator(call: &ToolCall) -> Result<String, String> {
    let expr = super::arg_str(call, "expression")?;
    rational::eval(expr).map(rational::format_result).map_err(|e| e.to_string())
}

pub(crate) const NAMES: &[&str] = &[
    "Tom", "Anna", "Ravi", "Mei", "Lucas", "Sara", "Omar", "Lena", "Kofi", "Ines", "Yuki", "Pablo", "Nora", "Ivan", "Amara", "Jonas", "Leila", "Hugo", "Zara",
    "Felix",
];
const ITEMS: &[&str] = &["apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells", "stamps", "eggs"];

impl Suite for Arithmetic {
    fn name(&self) -> &'static str {
        "arithmetic"
    }
    fn difficulties(&self) -> Option<std::ops::RangeInclusive<u8>> {
        Some(1..=3)
    }
    fn tool_names(&self) -> Option<&'static [&'static str]> {
        Some(&["calculator"])
    }
    fn tools(&self, _difficulty: u8) -> Vec<Value> {
        vec![calculator_spec()]
    }
    fn max_turns(&self, _difficulty: u8) -> u32 {
        4
    }
    fn draft(&self, rng: &mut TaskRng, difficulty: u8) -> Result<Draft, SuiteError> {
        let (instruction, expr) = match difficulty {
            1 => one_op(rng),
            2 => two_ops(rng),
            _ => three_ops(rng),
        };
        let value = rational::eval(&expr).map_err(|e| SuiteError::BadTask { task: expr.clone(), message: e.to_string() })?;
        let answer = rational::format_result(value);
        Ok(Draft {
            instruction,
            data: TaskData::None,
            expected: Expected::Answer(AnswerSpec { answer: answer.clone(), aliases: vec![], matcher: Matcher::Number { abs_tol: 1e-6, rel_tol: 0.0 } }),
            reference: Reference { calls: vec![ToolCall::new("calculator", json!({ "expression": expr }))], answer, actions: Vec::new() },
        })
    }
    fn sandbox(&self, _task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        Ok(Box::new(CalculatorSandbox))
    }
}

/// Stateless: the calculator is a pure function.
pub struct CalculatorSandbox;

impl Sandbox for CalculatorSandbox {
    fn call(&mut self, call: &ToolCall) -> Result<String, String> {
        match call.name.as_str() {
            "calculator" => calculator(call),
            _ => Err(unknown_tool(call)),
        }
    }
}

fn one_op(rng: &mut TaskRng) -> (String, String) {
    let name = pick(rng, NAMES);
    let items = pick(rng, ITEMS);
    match rng.random_range(0..4) {
        0 => {
            let (a, b) = (rng.random_range(12..1000), rng.random_range(12..1000));
            (format!("{name} has {a} {items}. {name} buys {b} more. How many {items} does {name} have now?"), format!("{a} + {b}"))
        }
        1 => {
            let a = rng.random_range(100..1000);
            let b = rng.random_range(11..a);
            (format!("{name} has {a} {items} and gives {b} of them to a friend. How many {items} are left?"), format!("{a} - {b}"))
        }
        2 => {
            let (a, b) = (rng.random_range(3..41), rng.random_range(6..49));
            (format!("{name} buys {a} boxes of {items}. Each box holds {b} {items}. How many {items} is that in total?"), format!("{a} * {b}"))
        }
        _ => {
            let (q, b) = (rng.random_range(12..100), rng.random_range(3..13));
            let total = q * b;
            (format!("{name} shares {total} {items} equally among {b} friends. How many {items} does each friend get?"), format!("{total} / {b}"))
        }
    }
}

fn two_ops(rng: &mut TaskRng) -> (String, String) {
    let name = pick(rng, NAMES);
    let items = pick(rng, ITEMS);
    match rng.random_range(0..4) {
        0 => {
            let (a, b, c) = (rng.random_range(5..200), rng.random_range(2..20), rng.random_range(3..25));
            (
                format!("{name} has {a} {items} and buys {b} packs with {c} {items} in each pack. How many {items} does {name} have now?"),
                format!("{a} + {b} * {c}"),
            )
        }
        1 => {
            let (a, b) = (rng.random_range(3..30), rng.random_range(5..30));
            let c = rng.random_range(1..a * b);
            (
                format!("{name} buys {a} bags of {items} with {b} {items} in each bag and gives away {c} {items}. How many {items} are left?"),
                format!("{a} * {b} - {c}"),
            )
        }
        2 => {
            let c = rng.random_range(2..10);
            let total = c * rng.random_range(10..60);
            let a = rng.random_range(1..total);
            let b = total - a;
            (
                format!("{name} picks {a} {items} in the morning and {b} in the afternoon, then puts them equally into {c} baskets. How many {items} go in each basket?"),
                format!("({a} + {b}) / {c}"),
            )
        }
        _ => {
            let n = rng.random_range(2..10);
            let quarters = rng.random_range(4..41);
            let price = Rational::new(quarters, 4).map(|p| p.to_decimal_string(2)).unwrap_or_else(|_| "1".into());
            let cost_ceiling = (n as i128 * quarters + 3) / 4;
            let bill = [20, 50, 100, 200].into_iter().find(|b| *b as i128 > cost_ceiling).unwrap_or(500);
            (
                format!("{name} buys {n} {items} at {price} dollars each and pays with a {bill}-dollar bill. How much change does {name} get, in dollars?"),
                format!("{bill} - {n} * {price}"),
            )
        }
    }
}

fn three_ops(rng: &mut TaskRng) -> (String, String) {
    let name = pick(rng, NAMES);
    let items = pick(rng, ITEMS);
    match rng.random_range(0..3) {
        0 => {
            let (a, b) = (rng.random_range(2..15), rng.random_range(2..15));
            let price = Rational::new(rng.random_range(5..80), 4).map(|p| p.to_decimal_string(2)).unwrap_or_else(|_| "2".into());
            let d = rng.random_range(1..6);
            (
                format!("A shop sells {items} at {price} dollars each. {name} buys {a} on Monday and {b} on Tuesday and gets a discount of {d} dollars. How much does {name} pay, in dollars?"),
                format!("({a} + {b}) * {price} - {d}"),
            )
        }
        1 => {
            let s: Vec<i64> = (0..4).map(|_| rng.random_range(40..100)).collect();
            (
                format!("{name} scores {}, {}, {} and {} points in four games. What is the average score per game?", s[0], s[1], s[2], s[3]),
                format!("({} + {} + {} + {}) / 4", s[0], s[1], s[2], s[3]),
            )
        }
        _ => {
            let per100 = rng.random_range(4..13);
            let km = rng.random_range(15..400);
            let trips = rng.random_range(2..6);
            (
                format!("{name}'s car uses {per100} liters of fuel per 100 km. {name} drives {km} km to work and back home, {trips} times. How many liters of fuel does that use?"),
                format!("{per100} * {km} * 2 * {trips} / 100"),
            )
        }
    }
}
