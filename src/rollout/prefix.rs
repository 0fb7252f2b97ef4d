//! Prompt prefixes (system prompt + few-shot examples) computed once and forked into every episode that starts
//! with them, including episodes that start later in the run. Measured on the quickstart's first evaluation
//! (three suites, 96 episodes): 66k of its 75k tokens were prompt, almost all of it the suites' shared prefixes,
//! which a single prefix common to *all* new episodes (a few tokens across suites) did not save.
use std::sync::Arc;

use crate::model::{KvCache, ModelError, Transformer};
use crate::sample::shared_prefix;

/// Prefixes shorter than this are not worth a cache entry.
const MIN_SHARED: usize = 32;
/// Enough for a run's suites; each entry holds one prefix's keys and values (~45 KB per token for SmolLM2-135M).
const MAX_ENTRIES: usize = 16;

/// A cached prompt prefix and the number of tokens it covers.
pub type SharedPrefix = (Arc<KvCache>, usize);

#[derive(Default)]
pub struct PrefixCache {
    entries: Vec<(Vec<u32>, Arc<KvCache>)>,
}

fn lcp(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    /// The longest cached prefix of `prompt` that leaves it at least one token of its own.
    fn lookup(&self, prompt: &[u32]) -> Option<(Arc<KvCache>, usize)> {
        self.entries.iter().filter(|(p, _)| p.len() < prompt.len() && prompt.starts_with(p)).max_by_key(|(p, _)| p.len()).map(|(p, c)| (c.clone(), p.len()))
    }

    /// For each prompt: a cache holding its first `n` tokens, and `n` (`None`: start from an empty cache).
    /// Prompts without a cached prefix are grouped by shared prefixes of at least `MIN_SHARED` tokens; each
    /// group's prefix is computed once and cached.
    pub fn prefixes(&mut self, model: &Transformer, prompts: &[&[u32]]) -> Result<Vec<Option<SharedPrefix>>, ModelError> {
        let mut out: Vec<Option<(Arc<KvCache>, usize)>> = prompts.iter().map(|p| self.lookup(p)).collect();
        let mut misses: Vec<usize> = (0..prompts.len()).filter(|&i| out[i].is_none()).collect();
        misses.sort_by(|&a, &b| prompts[a].cmp(prompts[b]));
        // In sorted order, prompts sharing a long prefix are adjacent.
        let mut start = 0;
        while start < misses.len() {
            let mut end = start + 1;
            while end < misses.len() && lcp(prompts[misses[end - 1]], prompts[misses[end]]) >= MIN_SHARED {
                end += 1;
            }
            let group: Vec<&[u32]> = misses[start..end].iter().map(|&i| prompts[i]).collect();
            if group.len() > 1 {
                let (cache, n) = shared_prefix(model, &group)?;
                if let Some(cache) = cache {
                    if self.entries.len() == MAX_ENTRIES {
                        self.entries.remove(0);
                    }
                    self.entries.push((group[0][..n].to_vec(), cache.clone()));
                    for &i in &misses[start..end] {
                        out[i] = Some((cache.clone(), n));
                    }
                }
            }
            start = end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcp_counts_the_common_head() {
        assert_eq!(lcp(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(lcp(&[], &[1]), 0);
    }
}
