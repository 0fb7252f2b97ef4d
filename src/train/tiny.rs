//! Tiny random models for tests and quick experiments (train in milliseconds per step): llama-shaped, or of any
//! supported architecture.
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
        sliding_window: None,
        sliding_layers: Vec::new(),
        rope_local_theta: None,
        query_pre_attn_scalar: None,
    }
}

/// [`tiny_config`] for `arch`: Qwen3 with heads of 24 (so `heads * head_dim` is not the hidden size), Gemma 3 with
/// heads of 32, a window of 4 on its first layer (the second is global), scores scaled by `24^-0.5`.
pub fn tiny_config_of(arch: Arch) -> ModelConfig {
    let mut c = ModelConfig { arch, ..tiny_config() };
    match arch {
        Arch::Llama | Arch::Qwen2 => {}
        Arch::Qwen3 => c.head_dim = 24,
        Arch::Gemma3 => {
            c.head_dim = 32;
            c.rope_theta = 1e6;
            c.sliding_window = Some(4);
            c.sliding_layers = vec![true, false];
            c.rope_local_theta = Some(10000.0);
            c.query_pre_attn_scalar = Some(24.0);
        }
    }
    c
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
            qk_norm: cfg.arch.has_qk_norm().then(|| {
                let hd = cfg.head_dim;
                ((0..hd).map(|_| 1.0 + rng.random_range(-0.3..0.3f32)).collect(), (0..hd).map(|_| 1.0 + rng.random_range(-0.3..0.3f32)).collect())
            }),
            post_norms: cfg
                .arch
                .is_gemma()
                .then(|| ((0..h).map(|_| 1.0 + rng.random_range(-0.3..0.3f32)).collect(), (0..h).map(|_| 1.0 + rng.random_range(-0.3..0.3f32)).collect())),
        })
        .collect();
    let embed = Matrix { rows: cfg.vocab_size, cols: h, data: WeightData::F32((0..cfg.vocab_size * h).map(|_| rng.random_range(-1.0..1.0f32)).collect()) };
    Weights { embed, layers, norm: (0..h).map(|_| 1.0 + rng.random_range(-0.1..0.1f32)).collect(), lm_head: None }
}
