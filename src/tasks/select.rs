//! The one way tasks are generated for a run: every command (`rollout`, `eval`, `tasks`) and the loop's splits
//! come through [`generated`], so the same suites, difficulties, seed and split give the same tasks everywhere.
use crate::data::{Split, Task};

use super::suites::{self, SuiteError};

/// `per` tasks of `split` for each suite in `names` (every generative suite when empty) and each difficulty, in
/// that order. A suite that only runs tasks from files, or lacks a difficulty, is an error naming it.
pub fn generated(names: &[String], difficulties: &[u8], split: Split, seed: u64, per: u64) -> Result<Vec<Task>, SuiteError> {
    let all: Vec<String>;
    let names = if names.is_empty() {
        all = suites::generative().map(|s| s.name().to_string()).collect();
        &all
    } else {
        names
    };
    let mut out = Vec::new();
    for name in names {
        let suite = suites::get(name)?;
        let Some(range) = suite.difficulties() else {
            return Err(SuiteError::NotGenerative { suite: name.clone() });
        };
        for &d in difficulties {
            if !range.contains(&d) {
                return Err(SuiteError::BadDifficulty { suite: name.clone(), difficulty: d, range });
            }
            out.extend(suites::generate_many(suite, seed, split, d, per)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generative_suite_by_default_and_errors_name_the_suite() {
        let all = generated(&[], &[1], Split::Test, 0, 2).unwrap();
        assert_eq!(all.len(), 2 * suites::generative().count());
        let one = generated(&["arithmetic".into()], &[1, 2], Split::Test, 0, 2).unwrap();
        assert_eq!(one.iter().map(|t| t.difficulty).collect::<Vec<_>>(), vec![1, 1, 2, 2]);
        let ids = |v: &[Task]| v.iter().filter(|t| t.suite == "arithmetic" && t.difficulty == 1).map(|t| t.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&one), ids(&all), "the same tasks whether named or taken by default");
        let e = generated(&["arithmetic".into()], &[9], Split::Test, 0, 1).unwrap_err().to_string();
        assert!(e.contains("arithmetic") && e.contains('9'), "{e}");
        let e = generated(&["nosuch".into()], &[1], Split::Test, 0, 1).unwrap_err().to_string();
        assert!(e.contains("nosuch"), "{e}");
    }
}
