//! `units`: unit conversion with `convert` and `calculator`. `convert` only knows directly related units
//! (km <-> m, mi <-> ft, ...), so far-apart units need chains: level 1 is one conversion, level 2 a two-step
//! chain or a product then a conversion, level 3 a three-step chain or a sum of quantities in different units.
//! Optimal plans come from breadth-first search over the unit graph.
use std::collections::{BTreeMap, VecDeque};

use rand::Rng;
use serde_json::{json, Value};

use super::arithmetic::{calculator, calculator_spec};
use super::{arg_f64, arg_str, pick, tool_spec, unknown_tool, Draft, Sandbox, Suite, SuiteError, TaskRng};
use crate::data::{AnswerSpec, Expected, Matcher, Reference, Task, TaskData, ToolCall};
use crate::tools::rational::Rational;

pub struct Units;

/// `to = from * scale + offset`, as decimal strings so that every factor is exact.
const EDGES: &[(&str, &str, &str, &str)] = &[
    ("km", "m", "1000", "0"),
    ("m", "cm", "100", "0"),
    ("cm", "mm", "10", "0"),
    ("mi", "km", "1.609344", "0"),
    ("mi", "ft", "5280", "0"),
    ("yd", "ft", "3", "0"),
    ("ft", "in", "12", "0"),
    ("in", "cm", "2.54", "0"),
    ("t", "kg", "1000", "0"),
    ("kg", "g", "1000", "0"),
    ("g", "mg", "1000", "0"),
    ("lb", "oz", "16", "0"),
    ("lb", "kg", "0.45359237", "0"),
    ("week", "day", "7", "0"),
    ("day", "h", "24", "0"),
    ("h", "min", "60", "0"),
    ("min", "s", "60", "0"),
    ("l", "ml", "1000", "0"),
    ("gal", "qt", "4", "0"),
    ("qt", "pt", "2", "0"),
    ("pt", "cup", "2", "0"),
    ("gal", "l", "3.785411784", "0"),
    ("C", "F", "1.8", "32"),
    ("C", "K", "1", "273.15"),
];

/// Category, units, and the object used in product and sum word problems.
const CATEGORIES: &[(&str, &[&str], &str)] = &[
    ("length", &["mm", "cm", "m", "km", "in", "ft", "yd", "mi"], "A plank is {v} long"),
    ("mass", &["mg", "g", "kg", "t", "oz", "lb"], "A bag weighs {v}"),
    ("time", &["s", "min", "h", "day", "week"], "A task takes {v}"),
    ("volume", &["ml", "l", "cup", "pt", "qt", "gal"], "A bottle holds {v}"),
    ("temperature", &["C", "F", "K"], ""),
];

/// Digits the tool prints: enough that rounding along a chain stays far below the answer tolerance.
const OUTPUT_PLACES: u32 = 9;

fn all_units() -> Vec<&'static str> {
    CATEGORIES.iter().flat_map(|c| c.1.iter().copied()).collect()
}

fn category(unit: &str) -> Option<usize> {
    CATEGORIES.iter().position(|c| c.1.contains(&unit))
}

#[derive(Clone, Copy)]
struct Edge {
    to: &'static str,
    scale: Rational,
    offset: Rational,
}

fn graph() -> BTreeMap<&'static str, Vec<Edge>> {
    let mut g: BTreeMap<&str, Vec<Edge>> = BTreeMap::new();
    for &(a, b, scale, offset) in EDGES {
        // The table holds exact decimal literals, so parsing cannot fail; a typo would fail every units test.
        let scale = Rational::parse(scale).unwrap_or(Rational::ONE);
        let offset = Rational::parse(offset).unwrap_or(Rational::ZERO);
        g.entry(a).or_default().push(Edge { to: b, scale, offset });
        let inv = Rational::ONE.checked_div(scale).unwrap_or(Rational::ONE);
        let inv_offset = offset.checked_neg().and_then(|o| o.checked_mul(inv)).unwrap_or(Rational::ZERO);
        g.entry(b).or_default().push(Edge { to: a, scale: inv, offset: inv_offset });
    }
    g
}

/// Shortest chain of units from `from` to `to`, both ends included.
fn path(g: &BTreeMap<&'static str, Vec<Edge>>, from: &'static str, to: &str) -> Option<Vec<&'static str>> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    prev.insert(from, from);
    while let Some(u) = queue.pop_front() {
        if u == to {
            let mut p = vec![u];
            let mut cur = u;
            while cur != from {
                cur = prev[cur];
                p.push(cur);
            }
            p.reverse();
            return Some(p);
        }
        for e in g.get(u).into_iter().flatten() {
            if !prev.contains_key(e.to) {
                prev.insert(e.to, u);
                queue.push_back(e.to);
            }
        }
    }
    None
}

fn convert_exact(g: &BTreeMap<&'static str, Vec<Edge>>, v: Rational, from: &str, to: &str) -> Result<Rational, String> {
    let edges = g.get(from).ok_or_else(|| format!("unknown unit `{from}`"))?;
    let e = edges.iter().find(|e| e.to == to).ok_or_else(|| {
        let targets: Vec<&str> = edges.iter().map(|e| e.to).collect();
        format!("no direct conversion from {from} to {to}; from {from} you can convert to: {}", targets.join(", "))
    })?;
    v.checked_mul(e.scale).and_then(|x| x.checked_add(e.offset)).map_err(|err| err.to_string())
}

pub fn convert_spec() -> Value {
    tool_spec(
        "convert",
        "Convert a value between two directly related units (for example km and m). Returns the converted value.",
        json!({
            "value": {"type": "number"},
            "from": {"type": "string", "enum": all_units()},
            "to": {"type": "string", "enum": all_units()},
        }),
        &["value", "from", "to"],
    )
}

pub struct UnitsSandbox {
    graph: BTreeMap<&'static str, Vec<Edge>>,
}

impl UnitsSandbox {
    pub fn new() -> Self {
        Self { graph: graph() }
    }
}

impl Default for UnitsSandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox for UnitsSandbox {
    fn call(&mut self, call: &ToolCall) -> Result<String, String> {
        match call.name.as_str() {
            "calculator" => calculator(call),
            "convert" => {
                let (from, to) = (arg_str(call, "from")?, arg_str(call, "to")?);
                let value = call.arguments.get("value").ok_or("missing number argument `value`")?;
                // Parse the JSON number's text so that decimals stay exact.
                let v = Rational::parse(&value.to_string())
                    .or_else(|_| arg_f64(call, "value").and_then(|f| Rational::parse(&format!("{f:.9}")).map_err(|e| e.to_string())));
                let v = v.map_err(|e| format!("bad value: {e}"))?;
                let out = convert_exact(&self.graph, v, from, to)?;
                Ok(format!("{} {from} = {} {to}", value, out.to_decimal_string(OUTPUT_PLACES)))
            }
            _ => Err(unknown_tool(call)),
        }
    }
}

impl Suite for Units {
    fn name(&self) -> &'static str {
        "units"
    }
    fn difficulties(&self) -> Option<std::ops::RangeInclusive<u8>> {
        Some(1..=3)
    }
    fn tool_names(&self) -> Option<&'static [&'static str]> {
        Some(&["convert", "calculator"])
    }
    fn tools(&self, _difficulty: u8) -> Vec<Value> {
        vec![convert_spec(), calculator_spec()]
    }
    fn max_turns(&self, difficulty: u8) -> u32 {
        3 + 2 * u32::from(difficulty)
    }
    fn draft(&self, rng: &mut TaskRng, difficulty: u8) -> Result<Draft, SuiteError> {
        let g = graph();
        let plan = match (difficulty, rng.random_range(0..2)) {
            (1, _) => chain(rng, &g, 1),
            (2, 0) => chain(rng, &g, 2),
            (2, _) => product(rng, &g),
            (_, 0) => chain(rng, &g, 3),
            _ => sum(rng, &g),
        };
        finish(plan)
    }
    fn sandbox(&self, _task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        Ok(Box::new(UnitsSandbox::new()))
    }
}

/// A drafted problem: the instruction, the exact answer and the reference calls (whose numeric arguments are
/// the tool outputs the model will see).
struct Plan {
    instruction: String,
    exact: Rational,
    calls: Vec<ToolCall>,
    final_value: String,
}

fn finish(plan: Plan) -> Result<Draft, SuiteError> {
    let answer = plan.exact.to_decimal_string(2);
    let bad = |m: String| SuiteError::BadTask { task: plan.instruction.clone(), message: m };
    let ref_value = Rational::parse(&plan.final_value).map_err(|e| bad(e.to_string()))?;
    Ok(Draft {
        instruction: plan.instruction.clone(),
        data: TaskData::None,
        expected: Expected::Answer(AnswerSpec {
            answer,
            aliases: vec![],
            // Answers are asked rounded to 2 decimals; chains of 9-decimal outputs stay well inside this.
            matcher: Matcher::Number { abs_tol: 0.006, rel_tol: 0.0 },
        }),
        reference: Reference { calls: plan.calls, answer: ref_value.to_decimal_string(2), actions: Vec::new() },
    })
}

fn random_value(rng: &mut TaskRng, unit: &str) -> Rational {
    if category(unit) == category("C") {
        return Rational::int(rng.random_range(-40..121));
    }
    if rng.random_bool(0.5) {
        Rational::int(rng.random_range(1..201))
    } else {
        Rational::new(rng.random_range(11..1000), 10).unwrap_or(Rational::ONE)
    }
}

fn num_json(v: Rational) -> Value {
    serde_json::from_str(&v.to_decimal_string(OUTPUT_PLACES)).unwrap_or(json!(v.to_f64()))
}

/// Converts along `units`, tracking the exact value and the value the sandbox prints (which the next call
/// uses); pushes the calls.
fn run_chain(
    g: &BTreeMap<&'static str, Vec<Edge>>,
    (mut exact, mut shown): (Rational, Rational),
    units: &[&str],
    calls: &mut Vec<ToolCall>,
) -> (Rational, Rational) {
    for w in units.windows(2) {
        calls.push(ToolCall::new("convert", json!({"value": num_json(shown), "from": w[0], "to": w[1]})));
        exact = convert_exact(g, exact, w[0], w[1]).unwrap_or(exact);
        let printed = convert_exact(g, shown, w[0], w[1]).unwrap_or(shown).to_decimal_string(OUTPUT_PLACES);
        shown = Rational::parse(&printed).unwrap_or(shown);
    }
    (exact, shown)
}

fn pair_at_distance(rng: &mut TaskRng, g: &BTreeMap<&'static str, Vec<Edge>>, hops: usize) -> Vec<&'static str> {
    loop {
        let cat = pick(rng, CATEGORIES);
        let from = *pick(rng, cat.1);
        let to = *pick(rng, cat.1);
        if let Some(p) = path(g, from, to) {
            if p.len() == hops + 1 {
                return p;
            }
        }
    }
}

fn chain(rng: &mut TaskRng, g: &BTreeMap<&'static str, Vec<Edge>>, hops: usize) -> Plan {
    let p = pair_at_distance(rng, g, hops);
    let (from, to) = (p[0], p[p.len() - 1]);
    let v = random_value(rng, from);
    let mut calls = Vec::new();
    let (exact, shown) = run_chain(g, (v, v), &p, &mut calls);
    Plan { instruction: format!("Convert {} {from} to {to}.", v.to_decimal_string(2)), exact, calls, final_value: shown.to_decimal_string(OUTPUT_PLACES) }
}

/// `n` objects of `v u1` each, asked in a neighbouring unit: multiply, then convert.
fn product(rng: &mut TaskRng, g: &BTreeMap<&'static str, Vec<Edge>>) -> Plan {
    let cat = loop {
        let c = pick(rng, CATEGORIES);
        if !c.2.is_empty() {
            break c;
        }
    };
    let from = *pick(rng, cat.1);
    let to = g[from][rng.random_range(0..g[from].len())].to;
    let v = random_value(rng, from);
    let n = rng.random_range(2..13);
    let total = v.checked_mul(Rational::int(n)).unwrap_or(v);
    let expr = format!("{} * {n}", v.to_decimal_string(2));
    let mut calls = vec![ToolCall::new("calculator", json!({ "expression": expr }))];
    let (exact, shown) = run_chain(g, (total, total), &[from, to], &mut calls);
    let subject = cat.2.replace("{v}", &format!("{} {from}", v.to_decimal_string(2)));
    Plan { instruction: format!("{subject}. How much is that for {n} of them, in {to}?"), exact, calls, final_value: shown.to_decimal_string(OUTPUT_PLACES) }
}

/// `a u1 + b u2`, asked in `u3`: the plan meets in the unit that needs the fewest calls.
fn sum(rng: &mut TaskRng, g: &BTreeMap<&'static str, Vec<Edge>>) -> Plan {
    let (cat, u1, u2, u3) = loop {
        let c = pick(rng, CATEGORIES);
        if c.2.is_empty() {
            continue;
        }
        let (a, b, t) = (*pick(rng, c.1), *pick(rng, c.1), *pick(rng, c.1));
        if a != b && path(g, a, b).is_some_and(|p| p.len() <= 3) && path(g, b, t).is_some_and(|p| p.len() == 2) && t != a {
            break (c, a, b, t);
        }
    };
    let hops = |x: &'static str, y: &str| path(g, x, y).map_or(usize::MAX / 4, |p| p.len() - 1);
    let meet = cat.1.iter().copied().min_by_key(|&m| (hops(u1, m) + hops(u2, m) + hops(m, u3), m)).unwrap_or(u2);
    let (a, b) = (random_value(rng, u1), random_value(rng, u2));
    let mut calls = Vec::new();
    let (ea, sa) = run_chain(g, (a, a), &path(g, u1, meet).unwrap_or_default(), &mut calls);
    let (eb, sb) = run_chain(g, (b, b), &path(g, u2, meet).unwrap_or_default(), &mut calls);
    let expr = format!("{} + {}", sa.to_decimal_string(OUTPUT_PLACES), sb.to_decimal_string(OUTPUT_PLACES));
    calls.push(ToolCall::new("calculator", json!({ "expression": expr })));
    let sums = (ea.checked_add(eb).unwrap_or(ea), sa.checked_add(sb).unwrap_or(sa));
    let (exact, shown) = run_chain(g, sums, &path(g, meet, u3).unwrap_or_default(), &mut calls);
    let subject = cat.2.replace("{v}", &format!("{} {u1}", a.to_decimal_string(2)));
    let other = cat.2.replace("{v}", &format!("{} {u2}", b.to_decimal_string(2))).replacen("A ", "another ", 1);
    Plan { instruction: format!("{subject} and {other}. What is the total, in {u3}?"), exact, calls, final_value: shown.to_decimal_string(OUTPUT_PLACES) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_exact_and_chains_are_refused() {
        let mut s = UnitsSandbox::new();
        let c = |v: Value, f: &str, t: &str| ToolCall::new("convert", json!({"value": v, "from": f, "to": t}));
        assert_eq!(s.call(&c(json!(2.5), "km", "m")).unwrap(), "2.5 km = 2500 m");
        assert_eq!(s.call(&c(json!(100), "C", "F")).unwrap(), "100 C = 212 F");
        assert_eq!(s.call(&c(json!(212), "F", "C")).unwrap(), "212 F = 100 C");
        assert_eq!(s.call(&c(json!(1), "in", "cm")).unwrap(), "1 in = 2.54 cm");
        let e = s.call(&c(json!(1), "mi", "cm")).unwrap_err();
        assert!(e.contains("no direct conversion") && e.contains("km"), "{e}");
        assert!(s.call(&c(json!(1), "kg", "m")).is_err());
    }

    #[test]
    fn bfs_finds_shortest_chains() {
        let g = graph();
        assert_eq!(path(&g, "mi", "m").unwrap(), vec!["mi", "km", "m"]);
        assert_eq!(path(&g, "yd", "in").unwrap().len(), 3);
        assert_eq!(path(&g, "F", "K").unwrap(), vec!["F", "C", "K"]);
        assert!(path(&g, "kg", "m").is_none());
    }
}
