//! Per-sequence key/value cache. A sequence may share a frozen prefix (e.g. the system prompt and few-shot
//! examples of K rollouts of one task) with its siblings: the prefix is computed and stored once.
use std::sync::Arc;

#[derive(Clone, Default)]
struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

#[derive(Clone)]
pub struct KvCache {
    kv_dim: usize,
    layers: Vec<LayerKv>,
    own_len: usize,
    parent: Option<Arc<KvCache>>,
    parent_len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize, kv_dim: usize) -> Self {
        KvCache { kv_dim, layers: vec![LayerKv::default(); num_layers], own_len: 0, parent: None, parent_len: 0 }
    }

    /// Number of positions cached (prefix included).
    pub fn len(&self) -> usize {
        self.parent_len + self.own_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new cache that continues from `prefix` without copying it.
    pub fn fork(prefix: &Arc<KvCache>) -> KvCache {
        match &prefix.parent {
            // Keep the chain one level deep: share the grandparent, copy the (short) own part.
            Some(grand) => KvCache { parent: Some(grand.clone()), ..(**prefix).clone() },
            None => KvCache {
                kv_dim: prefix.kv_dim,
                layers: vec![LayerKv::default(); prefix.layers.len()],
                own_len: 0,
                parent_len: prefix.len(),
                parent: Some(prefix.clone()),
            },
        }
    }

    /// Drops cached positions from `len` on (e.g. to re-feed a turn); positions inside a shared prefix are kept
    /// by copying the needed part.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len() {
            return;
        }
        if len < self.parent_len {
            let mut flat = KvCache::new(self.layers.len(), self.kv_dim);
            for (l, layer) in flat.layers.iter_mut().enumerate() {
                for t in 0..len {
                    layer.k.extend_from_slice(self.key(l, t));
                    layer.v.extend_from_slice(self.value(l, t));
                }
            }
            flat.own_len = len;
            *self = flat;
            return;
        }
        let own = len - self.parent_len;
        for layer in &mut self.layers {
            layer.k.truncate(own * self.kv_dim);
            layer.v.truncate(own * self.kv_dim);
        }
        self.own_len = own;
    }

    pub(crate) fn push(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let l = &mut self.layers[layer];
        l.k.extend_from_slice(k);
        l.v.extend_from_slice(v);
    }

    /// Called once per forward after every layer got its rows.
    pub(crate) fn advance(&mut self, n: usize) {
        self.own_len += n;
    }

    /// Keys and values of positions `0..len` of one layer, as (prefix part, own part), each `[pos][kv_dim]`.
    #[inline]
    pub(crate) fn parts(&self, layer: usize) -> [(&[f32], &[f32]); 2] {
        let own = &self.layers[layer];
        match &self.parent {
            Some(p) => {
                let pl = &p.layers[layer];
                let n = self.parent_len * self.kv_dim;
                [(&pl.k[..n], &pl.v[..n]), (&own.k, &own.v)]
            }
            None => [(&[], &[]), (&own.k, &own.v)],
        }
    }

    fn key(&self, layer: usize, t: usize) -> &[f32] {
        let [p, o] = self.parts(layer);
        let d = self.kv_dim;
        if t < self.parent_len {
            &p.0[t * d..(t + 1) * d]
        } else {
            &o.0[(t - self.parent_len) * d..(t - self.parent_len + 1) * d]
        }
    }

    fn value(&self, layer: usize, t: usize) -> &[f32] {
        let [p, o] = self.parts(layer);
        let d = self.kv_dim;
        if t < self.parent_len {
            &p.1[t * d..(t + 1) * d]
        } else {
            &o.1[(t - self.parent_len) * d..(t - self.parent_len + 1) * d]
        }
    }

    /// Bytes held by this cache itself (a shared prefix is not counted).
    pub fn own_bytes(&self) -> usize {
        self.layers.iter().map(|l| (l.k.capacity() + l.v.capacity()) * 4).sum()
    }
}
