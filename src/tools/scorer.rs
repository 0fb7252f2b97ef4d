//! The user's own reward: a program that reads a finished episode as JSON on stdin and prints a score in [0, 1].
//! A scorer that fails, hangs past its timeout or prints anything else gives a failed verdict saying why (the
//! episode is data, never a crash).
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::data::{ScorerSpec, Trajectory, Verdict};

use super::process::{isolated, kill_group, resolve_program};

/// The verdict of `spec`'s program on `episode` (whose own verdict is not shown to it).
pub fn score(spec: &ScorerSpec, episode: &Trajectory) -> Verdict {
    let name = spec.command.first().map_or("", String::as_str);
    match run(spec, episode) {
        Ok(s) => Verdict { success: s >= spec.threshold, score: s, reason: format!("scorer `{name}`: {s}") },
        Err(e) => Verdict { success: false, score: 0.0, reason: format!("scorer `{name}` failed: {e}") },
    }
}

fn run(spec: &ScorerSpec, episode: &Trajectory) -> Result<f64, String> {
    let (program, args) = spec.command.split_first().ok_or("no command")?;
    let mut value = serde_json::to_value(episode).map_err(|e| e.to_string())?;
    if let Some(o) = value.as_object_mut() {
        o.remove("verdict");
    }
    let input = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    let program = resolve_program(program).map_err(|e| e.to_string())?;
    let mut child = isolated(&program, args, &spec.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
        return Err("no pipes to the scorer".into());
    };
    // Pipes are fed and drained on their own threads, so a scorer that reads or writes a lot cannot block us.
    let feed = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_millis(spec.timeout_ms);
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no score within {} ms", spec.timeout_ms));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let _ = feed.join();
    let text = out.join().unwrap_or_default();
    let errors = err.join().unwrap_or_default();
    if !status.success() {
        let tail: String = errors.trim().chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(format!("exited with {status}{}", if tail.is_empty() { String::new() } else { format!(": {tail}") }));
    }
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let s: f64 = last.parse().map_err(|_| format!("printed `{}`, not a score", last.chars().take(100).collect::<String>()))?;
    if !(0.0..=1.0).contains(&s) {
        return Err(format!("printed {s}, outside [0, 1]"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode() -> Trajectory {
        use crate::data::{Counts, Message, RunIdentity, Split, Termination};
        Trajectory {
            task_id: "t1".into(),
            suite: "qa".into(),
            split: Split::Test,
            difficulty: 1,
            identity: RunIdentity::default(),
            sample_index: 0,
            messages: vec![Message::user("hi")],
            tools: None,
            fewshot_messages: 0,
            privileged: None,
            token_ids: vec![],
            produced_mask: vec![],
            logprobs: vec![],
            turns: vec![],
            verdict: Verdict { success: true, score: 1.0, reason: "x".into() },
            counts: Counts::default(),
            wall_ms: 0,
            termination: Termination::FinalAnswer,
        }
    }

    fn sh(script: &str) -> ScorerSpec {
        ScorerSpec { command: vec!["/bin/sh".into(), "-c".into(), script.into()], env: Default::default(), threshold: 0.5, timeout_ms: 2_000 }
    }

    #[test]
    fn the_scorer_reads_the_episode_and_its_score_decides() {
        // The episode arrives on stdin, without its verdict.
        let v =
            score(&sh(r#"x=$(cat); case "$x" in *'"task_id":"t1"'*'"verdict"'*) echo 0 ;; *'"task_id":"t1"'*) echo 0.75 ;; *) echo 0 ;; esac"#), &episode());
        assert_eq!((v.success, v.score), (true, 0.75), "{}", v.reason);
        let v = score(&sh("cat > /dev/null; echo 0.25"), &episode());
        assert_eq!((v.success, v.score), (false, 0.25));
        // Only the configured environment.
        let v = score(
            &ScorerSpec {
                env: [("ONLY".to_string(), "1".to_string())].into(),
                ..sh(r#"cat > /dev/null; [ "$ONLY" = 1 ] && [ -z "$HOME" ] && echo 1 || echo 0"#)
            },
            &episode(),
        );
        assert_eq!(v.score, 1.0, "{}", v.reason);
    }

    #[test]
    fn a_broken_scorer_is_a_failed_verdict_saying_why() {
        for (script, why) in [("echo nope", "not a score"), ("echo 1.5", "outside [0, 1]"), ("echo oops >&2; exit 3", "oops"), ("sleep 10", "no score within")]
        {
            let v = score(&ScorerSpec { timeout_ms: 300, ..sh(script) }, &episode());
            assert!(!v.success && v.score == 0.0 && v.reason.contains("/bin/sh") && v.reason.contains(why), "{script}: {}", v.reason);
        }
        let v = score(&ScorerSpec { command: vec!["no-such-scorer".into()], ..sh("") }, &episode());
        assert!(!v.success && v.reason.contains("no-such-scorer"), "{}", v.reason);
    }
}
