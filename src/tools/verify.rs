//! The verifier: judges an episode's outcome against `Task::expected`. It runs outside the sandbox and reads
//! only what the episode produced (final answer, the calls of a function-call turn, the sandbox's final state).
use std::collections::BTreeMap;

use serde_json::Value;

use crate::data::{AnswerSpec, Expected, ExpectedCall, GoalState, Matcher, ToolCall, Verdict};
use crate::tools::rational::Rational;

/// What an episode leaves behind for the verifier.
#[derive(Debug, Default)]
pub struct Outcome<'a> {
    pub answer: Option<&'a str>,
    /// The calls of the turn judged in function-call tasks; `None` when the model made no valid turn.
    pub calls: Option<&'a [ToolCall]>,
    pub state: Option<GoalState>,
    /// An environment episode's score: its return, normalised to [0, 1].
    pub reward: Option<f64>,
}

fn verdict(success: bool, score: f64, reason: impl Into<String>) -> Verdict {
    Verdict { success, score, reason: reason.into() }
}

pub fn verify(expected: &Expected, outcome: &Outcome<'_>) -> Verdict {
    match expected {
        Expected::Answer(spec) => match outcome.answer {
            Some(a) => check_answer(spec, a),
            None => verdict(false, 0.0, "no final answer"),
        },
        Expected::Calls { calls } => match outcome.calls {
            Some(actual) => check_calls(calls, actual),
            None => verdict(false, 0.0, "no valid turn to judge"),
        },
        // Scored on the whole episode once it is written (`scorer::score`).
        Expected::Scorer(_) => verdict(false, 0.0, "not scored yet"),
        Expected::Reward { threshold } => match outcome.reward {
            Some(r) => verdict(r >= *threshold, r, format!("the environment's reward: {r:.3} (success from {threshold})")),
            None => verdict(false, 0.0, "no reward: the task does not run in an environment"),
        },
        Expected::State { state, answer } => {
            let Some(actual) = &outcome.state else {
                return verdict(false, 0.0, "the sandbox has no state");
            };
            if !same_state(state, actual) {
                return verdict(false, 0.0, state_difference(state, actual));
            }
            match (answer, outcome.answer) {
                (None, _) => verdict(true, 1.0, "goal state reached"),
                (Some(spec), Some(a)) => check_answer(spec, a),
                (Some(_), None) => verdict(false, 0.0, "goal state reached but no final answer"),
            }
        }
    }
}

/// Lower case, punctuation and the articles a/an/the removed, whitespace collapsed (SQuAD normalisation).
pub fn normalize_text(s: &str) -> String {
    let cleaned: String = s.to_lowercase().chars().map(|c| if c.is_alphanumeric() || c.is_whitespace() { c } else { ' ' }).collect();
    cleaned.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

fn token_f1(pred: &str, gold: &str) -> f64 {
    let p: Vec<String> = normalize_text(pred).split(' ').filter(|t| !t.is_empty()).map(String::from).collect();
    let g: Vec<String> = normalize_text(gold).split(' ').filter(|t| !t.is_empty()).map(String::from).collect();
    if p.is_empty() || g.is_empty() {
        return if p == g { 1.0 } else { 0.0 };
    }
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for t in &g {
        *counts.entry(t).or_default() += 1;
    }
    let mut common = 0;
    for t in &p {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let (precision, recall) = (common as f64 / p.len() as f64, common as f64 / g.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// Numbers written in `s`, in order: `-12`, `1,234.5`, `3/4`, `.5`.
pub fn numbers_in(s: &str) -> Vec<f64> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = b[i].is_ascii_digit() || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !starts || (i > 0 && (b[i - 1].is_ascii_alphanumeric())) {
            i += 1;
            continue;
        }
        let neg = i > 0 && b[i - 1] == b'-' && (i < 2 || !b[i - 2].is_ascii_alphanumeric());
        let mut j = i;
        let mut text = String::new();
        let mut seen_dot = false;
        while j < b.len() {
            let c = b[j];
            if c.is_ascii_digit() {
                text.push(c as char);
            } else if c == b','
                && !seen_dot
                && b.get(j + 1..j + 4).is_some_and(|t| t.iter().all(u8::is_ascii_digit))
                && b.get(j + 4).is_none_or(|c| !c.is_ascii_digit())
            {
                // A thousands separator: exactly three digits follow.
            } else if c == b'.' && !seen_dot && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
                seen_dot = true;
                text.push('.');
            } else {
                break;
            }
            j += 1;
        }
        let mut value = Rational::parse(&text).map(|r| r.to_f64()).ok();
        if b.get(j) == Some(&b'/') && b.get(j + 1).is_some_and(u8::is_ascii_digit) && !seen_dot {
            let mut k = j + 1;
            while k < b.len() && b[k].is_ascii_digit() {
                k += 1;
            }
            if let Ok(r) = Rational::parse(&format!("{text}/{}", &s[j + 1..k])) {
                value = Some(r.to_f64());
                j = k;
            }
        }
        if let Some(v) = value {
            out.push(if neg { -v } else { v });
        }
        i = j.max(i + 1);
    }
    out
}

fn check_answer(spec: &AnswerSpec, answer: &str) -> Verdict {
    let golds = std::iter::once(&spec.answer).chain(&spec.aliases);
    match spec.matcher {
        Matcher::Exact => {
            let a = normalize_text(answer);
            match golds.clone().find(|g| normalize_text(g) == a) {
                Some(g) => verdict(true, 1.0, format!("answer matches `{g}`")),
                None => verdict(false, 0.0, format!("answer `{answer}` does not match `{}`", spec.answer)),
            }
        }
        Matcher::F1 { threshold } => {
            let best = golds.map(|g| token_f1(answer, g)).fold(0.0, f64::max);
            verdict(best >= threshold, best, format!("token F1 {best:.3} (threshold {threshold})"))
        }
        Matcher::Number { abs_tol, rel_tol } => {
            let Some(&got) = numbers_in(answer).last() else {
                return verdict(false, 0.0, format!("answer `{answer}` has no number"));
            };
            for g in golds {
                if let Some(&want) = numbers_in(g).last() {
                    if (got - want).abs() <= abs_tol.max(rel_tol * want.abs()) {
                        return verdict(true, 1.0, format!("{got} matches {want}"));
                    }
                }
            }
            verdict(false, 0.0, format!("{got} does not match {}", spec.answer))
        }
    }
}

/// Files compare with trailing whitespace of each file ignored: a model that ends a file with a newline has
/// still written the asked content.
fn same_state(want: &GoalState, got: &GoalState) -> bool {
    match (want, got) {
        (GoalState::Files { dirs: d1, files: f1 }, GoalState::Files { dirs: d2, files: f2 }) => {
            d1 == d2 && f1.len() == f2.len() && f1.iter().zip(f2).all(|((p1, c1), (p2, c2))| p1 == p2 && c1.trim_end() == c2.trim_end())
        }
        _ => want == got,
    }
}

fn state_difference(want: &GoalState, got: &GoalState) -> String {
    match (want, got) {
        (GoalState::Files { dirs: d1, files: f1 }, GoalState::Files { dirs: d2, files: f2 }) => {
            let missing: Vec<&String> = d1.difference(d2).chain(f1.keys().filter(|k| !f2.contains_key(*k))).collect();
            let extra: Vec<&String> = d2.difference(d1).chain(f2.keys().filter(|k| !f1.contains_key(*k))).collect();
            let changed: Vec<&String> = f1.iter().filter(|(k, c)| f2.get(*k).is_some_and(|c2| c2.trim_end() != c.trim_end())).map(|(k, _)| k).collect();
            format!("final tree differs: missing {missing:?}, unexpected {extra:?}, wrong content {changed:?}")
        }
        (GoalState::Grid { position: w }, GoalState::Grid { position: g }) => {
            format!("ended at row {}, column {}, not at the goal (row {}, column {})", g[0] + 1, g[1] + 1, w[0] + 1, w[1] + 1)
        }
        _ => "the final state has the wrong kind".into(),
    }
}

/// JSON equality with numbers compared by value and strings compared trimmed and case-insensitively.
fn value_matches(allowed: &Value, got: &Value) -> bool {
    match (allowed, got) {
        (Value::Number(a), Value::Number(b)) => a.as_f64().zip(b.as_f64()).is_some_and(|(a, b)| (a - b).abs() <= 1e-9 * a.abs().max(1.0)),
        (Value::String(a), Value::String(b)) => a.trim().to_lowercase() == b.trim().to_lowercase(),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| value_matches(x, y)),
        (Value::Object(a), Value::Object(b)) => a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| value_matches(v, w))),
        _ => allowed == got,
    }
}

fn call_matches(want: &ExpectedCall, got: &ToolCall) -> Result<(), String> {
    if want.name != got.name {
        return Err(format!("expected `{}`, got `{}`", want.name, got.name));
    }
    let empty = serde_json::Map::new();
    let args = got.arguments.as_object().unwrap_or(&empty);
    for (name, allowed) in &want.arguments {
        match args.get(name) {
            Some(v) if allowed.iter().any(|a| !a.is_null() && value_matches(a, v)) => {}
            Some(v) => return Err(format!("`{}`: argument `{name}` = {v} is not an allowed value", got.name)),
            None if allowed.iter().any(Value::is_null) => {}
            None => return Err(format!("`{}`: missing argument `{name}`", got.name)),
        }
    }
    if let Some(extra) = args.keys().find(|k| !want.arguments.contains_key(*k)) {
        return Err(format!("`{}`: unexpected argument `{extra}`", got.name));
    }
    Ok(())
}

/// Each expected call must match a distinct actual call; order is ignored (parallel calls).
fn check_calls(expected: &[ExpectedCall], actual: &[ToolCall]) -> Verdict {
    if expected.is_empty() {
        return if actual.is_empty() {
            verdict(true, 1.0, "correctly called nothing")
        } else {
            verdict(false, 0.0, format!("expected no call, got {}", actual.len()))
        };
    }
    if expected.len() != actual.len() {
        return verdict(false, 0.0, format!("expected {} calls, got {}", expected.len(), actual.len()));
    }
    let mut used = vec![false; actual.len()];
    if assign(expected, actual, &mut used) {
        return verdict(true, 1.0, "calls match");
    }
    // Explain with the first expected call that has no match anywhere.
    let reason = expected
        .iter()
        .find_map(|w| {
            let errs: Vec<String> = actual.iter().filter_map(|g| call_matches(w, g).err()).collect();
            (errs.len() == actual.len()).then(|| errs.into_iter().find(|e| !e.starts_with("expected")).unwrap_or_else(|| format!("no call to `{}`", w.name)))
        })
        .unwrap_or_else(|| "calls do not match".into());
    verdict(false, 0.0, reason)
}

/// Backtracking bipartite matching; call lists are short.
fn assign(expected: &[ExpectedCall], actual: &[ToolCall], used: &mut [bool]) -> bool {
    let Some((first, rest)) = expected.split_first() else {
        return true;
    };
    for i in 0..actual.len() {
        if !used[i] && call_matches(first, &actual[i]).is_ok() {
            used[i] = true;
            if assign(rest, actual, used) {
                return true;
            }
            used[i] = false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ans(answer: &str, matcher: Matcher) -> Expected {
        Expected::Answer(AnswerSpec { answer: answer.into(), aliases: vec![], matcher })
    }
    fn judge(e: &Expected, a: &str) -> bool {
        verify(e, &Outcome { answer: Some(a), ..Default::default() }).success
    }

    #[test]
    fn number_matcher_reads_the_last_number() {
        let e = ans("1234.5", Matcher::Number { abs_tol: 1e-6, rel_tol: 0.0 });
        assert!(judge(&e, "1,234.5"));
        assert!(judge(&e, "3 + 4 = 7, so the total is $1234.50."));
        assert!(!judge(&e, "1234.6"));
        assert!(!judge(&e, "no idea"));
        assert!(judge(&ans("-0.75", Matcher::Number { abs_tol: 1e-6, rel_tol: 0.0 }), "-3/4"));
        assert!(judge(&ans("100", Matcher::Number { abs_tol: 0.0, rel_tol: 0.01 }), "100.9"));
        assert_eq!(numbers_in("a-1 and x2 and -2, 1,000,000 or 1,23"), vec![1.0, -2.0, 1_000_000.0, 1.0, 23.0]);
    }

    #[test]
    fn exact_and_f1() {
        let e = ans("The Eiffel Tower", Matcher::Exact);
        assert!(judge(&e, "eiffel tower."));
        assert!(!judge(&e, "the tower"));
        let f = ans("red green blue", Matcher::F1 { threshold: 0.6 });
        let v = verify(&f, &Outcome { answer: Some("red green"), ..Default::default() });
        assert!(v.success && (v.score - 0.8).abs() < 1e-9, "{v:?}");
        assert!(!judge(&f, "yellow"));
    }

    #[test]
    fn expected_calls_ignore_order_and_check_allowed_values() {
        let e = Expected::Calls {
            calls: vec![
                ExpectedCall {
                    name: "weather".into(),
                    arguments: [("city".to_string(), vec![json!("Paris")]), ("unit".to_string(), vec![json!("c"), Value::Null])].into(),
                },
                ExpectedCall { name: "time".into(), arguments: [("tz".to_string(), vec![json!("CET")])].into() },
            ],
        };
        let run = |calls: Vec<ToolCall>| verify(&e, &Outcome { calls: Some(&calls), ..Default::default() });
        let good = vec![ToolCall::new("time", json!({"tz": "cet"})), ToolCall::new("weather", json!({"city": " paris"}))];
        assert!(run(good).success);
        assert!(run(vec![ToolCall::new("time", json!({"tz": "CET"})), ToolCall::new("weather", json!({"city": "Paris", "unit": "c"}))]).success);
        let v = run(vec![ToolCall::new("time", json!({"tz": "CET"})), ToolCall::new("weather", json!({"city": "Rome"}))]);
        assert!(!v.success && v.reason.contains("city"), "{v:?}");
        assert!(!run(vec![ToolCall::new("time", json!({"tz": "CET"})), ToolCall::new("weather", json!({"city": "Paris", "x": 1}))]).success);
        assert!(!run(vec![ToolCall::new("time", json!({"tz": "CET"}))]).success);
        let none = Expected::Calls { calls: vec![] };
        assert!(verify(&none, &Outcome { calls: Some(&[]), answer: Some("hi"), ..Default::default() }).success);
        assert!(!verify(&none, &Outcome { calls: Some(&[ToolCall::new("time", json!({}))]), ..Default::default() }).success);
    }

    #[test]
    fn state_goals() {
        let want = GoalState::Files { dirs: ["/a".to_string()].into(), files: [("/a/x".to_string(), "hi".to_string())].into() };
        let e = Expected::State { state: want, answer: None };
        let got = |c: &str| GoalState::Files { dirs: ["/a".to_string()].into(), files: [("/a/x".to_string(), c.to_string())].into() };
        assert!(verify(&e, &Outcome { state: Some(got("hi\n")), ..Default::default() }).success);
        let v = verify(&e, &Outcome { state: Some(got("ho")), ..Default::default() });
        assert!(!v.success && v.reason.contains("/a/x"), "{v:?}");
        let g = Expected::State { state: GoalState::Grid { position: [1, 2] }, answer: None };
        assert!(!verify(&g, &Outcome { state: Some(GoalState::Grid { position: [1, 1] }), ..Default::default() }).success);
    }
}
