//! A tiny random llama-shaped model for tests and quick experiments (trains in milliseconds per step).
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::config::Arch;
use crate::model::linear::{Matrix, WeightData};
use crate::model::weights::{LayerWeights, Weights};
use crate::model::ModelConfig;

/// 2 layers, hidden 64, 4 heads of 16, 2 KV heads, MLP 128, vocabulary 300, tied embeddings.
pub fn tiny_config() -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        vocab_size: 300,
        hidden_size: 64,
        intermediate_size: 128,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        rope_theta: 10000.0,
        rope_scaling: None,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 512,
        tie_word_embeddings: true,
        attention_bias: false,
    }
}

/// Seeded random f32 weights for `cfg` (entries ~ U(-1, 1) / sqrt(fan-in), norms near 1).
pub fn tiny_weights(cfg: &ModelConfig, seed: u64) -> Weights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mat = |rows: usize, cols: usize, rng: &mut ChaCha8Rng| {
        let s = 1.0 / (cols as f32).sqrt();
        Matrix { rows, cols, data: WeightData::F32((0..rows * cols).map(|_| rng.random_range(-s..s) * 1.7).collect()) }
    };
    let (h, q, kv, i) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size);
    let layers = (0..cfg.num_layers)
        .map(|_| LayerWeights {
            attn_norm: (0..h).map(|_| 1.0 + rng.random_range(-0.1..0.1f32)).collect(),
            qkv: mat(q + 2 * kv, h, &mut rng),
            qkv_bias: None,
            o: mat(h, q, &mut rng),
            mlp_norm: (0..h).map(|_| 1.0 + rng.random_range(-0.1..0.1f32)).collect(),
            gate_up: mat(2 * i, h, &mut rng),
            down: mat(h, i, &mut rng),
        })
        .collect();
    let embed = Matrix { rows: cfg.vocab_size, cols: h, data: WeightData::F32((0..cfg.vocab_size * h).map(|_| rng.random_range(-1.0..1.0f32)).collect()) };
    Weights { embed, layers, norm: (0..h).map(|_| 1.0 + rng.random_range(-0.1..0.1f32)).collect(), lm_head: None }
}
