//! Training rows and length-bucketed, seeded batching.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Result, TrainError};

/// One training sequence: the exact token ids and which of them are trained (`loss_mask[i] == 1`: the model is
/// trained to predict token `i` from the tokens before it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub token_ids: Vec<u32>,
    pub loss_mask: Vec<u8>,
}

impl TrainRow {
    /// Tokens that contribute to the loss (the first token has no prediction and never counts).
    pub fn trained_tokens(&self) -> usize {
        self.loss_mask.iter().skip(1).filter(|&&m| m == 1).count()
    }
}

/// Rejects rows that would train nothing or silently misalign tokens and mask.
pub fn validate_rows(rows: &[TrainRow], max_len: usize) -> Result<()> {
    if rows.is_empty() {
        return Err(TrainError::Data("the dataset has no rows".into()));
    }
    for (i, r) in rows.iter().enumerate() {
        let name = r.id.clone().unwrap_or_else(|| format!("row {i}"));
        if r.token_ids.len() != r.loss_mask.len() {
            return Err(TrainError::Data(format!("{name}: {} token ids but {} mask values", r.token_ids.len(), r.loss_mask.len())));
        }
        if let Some(m) = r.loss_mask.iter().find(|&&m| m > 1) {
            return Err(TrainError::Data(format!("{name}: loss_mask value {m} (must be 0 or 1)")));
        }
        if r.token_ids.len() > max_len {
            return Err(TrainError::Data(format!("{name}: {} tokens, more than the maximum sequence length {max_len}", r.token_ids.len())));
        }
        if r.trained_tokens() == 0 {
            return Err(TrainError::Data(format!("{name}: no trained token (loss_mask is 0 after the first token)")));
        }
    }
    Ok(())
}

/// The micro-batches of one epoch, as row indices. Rows are shuffled (seeded by `seed` and `epoch`), grouped in
/// windows of 16 batches, sorted by length inside each window so that a batch holds similar lengths (little
/// padding), and the batch order is shuffled again so lengths do not trend through the epoch.
pub fn epoch_batches(lengths: &[usize], batch_size: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    idx.shuffle(&mut rng);
    let bs = batch_size.max(1);
    let mut batches = Vec::new();
    for window in idx.chunks(bs * 16) {
        let mut w = window.to_vec();
        w.sort_by_key(|&i| (lengths[i], i));
        batches.extend(w.chunks(bs).map(|c| c.to_vec()));
    }
    batches.shuffle(&mut rng);
    batches
}
