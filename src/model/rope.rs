//! Rotary position embeddings in HF's half-split layout (GGUF llama rows are un-permuted at load to match).
use super::config::{ModelConfig, RopeScaling};
use crate::simd::Simd;

pub struct Rope {
    half: usize,
    /// cos and sin for positions `0..table_len`, `[pos][half]`; computed once at load.
    cos: Vec<f32>,
    sin: Vec<f32>,
    inv_freq: Vec<f32>,
}

const MAX_TABLE: usize = 32768;

impl Rope {
    /// The rope of the model's global layers (all layers but Gemma's sliding-window ones).
    pub fn new(cfg: &ModelConfig) -> Self {
        Self::build(cfg, cfg.rope_theta, cfg.rope_scaling)
    }

    /// The rope of Gemma's sliding-window layers: their own base, never scaled. `None` when the model has no
    /// such layers.
    pub fn local(cfg: &ModelConfig) -> Option<Self> {
        (cfg.sliding_window.is_some() && cfg.sliding_layers.contains(&true)).then(|| Self::build(cfg, cfg.rope_local_theta.unwrap_or(cfg.rope_theta), None))
    }

    fn build(cfg: &ModelConfig, theta: f32, scaling: Option<RopeScaling>) -> Self {
        let half = cfg.head_dim / 2;
        let mut inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / (theta as f64).powf(2.0 * i as f64 / cfg.head_dim as f64) as f32).collect();
        match scaling {
            Some(RopeScaling::Llama3(s)) => {
                // Llama 3.x: scale low frequencies, keep high ones, interpolate in between.
                let old = s.original_max_position_embeddings as f32;
                let low_wavelen = old / s.low_freq_factor;
                let high_wavelen = old / s.high_freq_factor;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    *f = if wavelen < high_wavelen {
                        *f
                    } else if wavelen > low_wavelen {
                        *f / s.factor
                    } else {
                        let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                        (1.0 - smooth) * *f / s.factor + smooth * *f
                    };
                }
            }
            Some(RopeScaling::Linear { factor }) => inv_freq.iter_mut().for_each(|f| *f /= factor),
            None => {}
        }
        let n = cfg.max_position_embeddings.min(MAX_TABLE);
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for &f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Rope { half, cos, sin, inv_freq }
    }

    /// Rotates every head of `x` (`heads * head_dim` values) for position `pos`, in place.
    pub fn apply(&self, simd: Simd, x: &mut [f32], pos: usize) {
        let h = self.half;
        let computed;
        let (c, s) = if (pos + 1) * h <= self.cos.len() {
            (&self.cos[pos * h..(pos + 1) * h], &self.sin[pos * h..(pos + 1) * h])
        } else {
            computed = self.inv_freq.iter().map(|f| ((pos as f32 * f).cos(), (pos as f32 * f).sin())).unzip::<_, _, Vec<_>, Vec<_>>();
            (&computed.0[..], &computed.1[..])
        };
        crate::simd::kernels::rope(simd, x, c, s);
    }
}
