//! The runtime on the real default model: logits against candle-transformers' reference implementation,
//! and incremental (KV-cached) logits against full-sequence logits, on every instruction-set path this CPU has.
use super::common;

use autodidact::simd::Simd;

use autodidact::model::gguf::GgufFile;
use autodidact::model::weights::Weights;
use autodidact::model::{KvCache, Logits, ModelConfig, SeqInput, Transformer};

// "<|im_start|>user\nWhat is 12*7?<|im_end|>\n<|im_start|>assistant\n" with SmolLM2's tokenizer.
const PROMPT: [u32; 17] = [1, 4093, 198, 1780, 314, 216, 33, 34, 26, 39, 47, 2, 198, 1, 520, 9531, 198];

fn load() -> Transformer {
    let path = common::default_model();
    let g = GgufFile::open(&path).unwrap();
    let has_output = g.has_tensor("output.weight");
    let cfg = ModelConfig::from_gguf(g.metadata(), has_output, 49152, &path).unwrap();
    let w = Weights::load(&g, &cfg).unwrap();
    Transformer::new(cfg, w)
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) }).0
}

fn full_logits(m: &Transformer, toks: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache();
    m.forward(&mut [SeqInput { cache: &mut cache, tokens: toks, logits: Logits::All }]).unwrap().remove(0)
}

#[test]
fn logits_match_candle_quantized_llama() {
    use candle_core::{Device, Tensor};
    use candle_transformers::models::quantized_llama::ModelWeights;
    let m = load();
    let v = m.cfg.vocab_size;
    let ours = full_logits(&m, &PROMPT);

    let path = common::default_model();
    let mut f = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap();
    let (mut max_diff, mut sum_diff, mut decisive) = (0f32, 0f64, 0);
    for (pos, &tok) in PROMPT.iter().enumerate() {
        let input = Tensor::new(&[tok], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let r: Vec<f32> = reference.forward(&input, pos).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        let o = &ours[pos * v..(pos + 1) * v];
        // candle quantizes activations to int8, which moves its logits by a few tenths: where its top two
        // tokens are closer than that, the top-1 is a coin flip for it, not a disagreement about the model.
        let mut sorted = r.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > 0.5 {
            decisive += 1;
            assert_eq!(argmax(o), argmax(&r), "top-1 differs at position {pos}");
        } else {
            eprintln!("position {pos}: candle's top-2 margin {} is within its int8 noise", sorted[0] - sorted[1]);
        }
        let d = o.iter().zip(&r).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        max_diff = max_diff.max(d);
        sum_diff += o.iter().zip(&r).map(|(x, y)| (x - y).abs() as f64).sum::<f64>();
    }
    let mean_diff = sum_diff / (PROMPT.len() * v) as f64;
    eprintln!(
        "vs candle quantized_llama over {} positions: max |logit diff| {max_diff}, mean {mean_diff}, same top-1 at all {decisive} decisive positions",
        PROMPT.len()
    );
    assert!(2 * decisive >= PROMPT.len(), "only {decisive} decisive positions");
    // candle's int8 activations differ from exact f32 by this much (logits reach |36|); ours are exact up to
    // summation order (next test).
    assert!(max_diff < 2.5, "max |diff| = {max_diff}");
    assert!(mean_diff < 0.4, "mean |diff| = {mean_diff}");
}

#[test]
fn kv_cached_logits_equal_full_forward() {
    let mut m = load();
    for simd in Simd::available() {
        m.simd = simd;
        kv_cached_equal_full(&m);
    }
}

fn kv_cached_equal_full(m: &Transformer) {
    let v = m.cfg.vocab_size;
    let full = full_logits(m, &PROMPT);
    // Feed in uneven chunks: 5 tokens, then 1 at a time, then the rest.
    let mut cache = m.new_cache();
    let mut inc = Vec::new();
    for chunk in [&PROMPT[..5], &PROMPT[5..6], &PROMPT[6..7], &PROMPT[7..]] {
        inc.extend(m.forward(&mut [SeqInput { cache: &mut cache, tokens: chunk, logits: Logits::All }]).unwrap().remove(0));
    }
    assert_eq!(inc.len(), full.len());
    assert!(inc == full, "{}: incremental logits differ from full-forward logits", m.simd);
    assert_eq!(cache.len(), PROMPT.len());
    let _ = v;
}

#[test]
fn batched_ragged_forward_equals_single_sequences_and_shared_prefix() {
    let mut m = load();
    for simd in Simd::available() {
        m.simd = simd;
        batched_equal_single(&m);
    }
}

fn batched_equal_single(m: &Transformer) {
    let v = m.cfg.vocab_size;
    let a = &PROMPT[..];
    let b = &PROMPT[..9];
    let single_a = full_logits(m, a);
    let single_b = full_logits(m, b);
    let (mut ca, mut cb) = (m.new_cache(), m.new_cache());
    let out =
        m.forward(&mut [SeqInput { cache: &mut ca, tokens: a, logits: Logits::All }, SeqInput { cache: &mut cb, tokens: b, logits: Logits::Last }]).unwrap();
    assert!(out[0] == single_a, "{}", m.simd);
    assert!(out[1] == single_b[(b.len() - 1) * v..], "{}", m.simd);

    // A forked cache continues the shared prefix exactly as an unshared one.
    let mut prefix = m.new_cache();
    m.forward(&mut [SeqInput { cache: &mut prefix, tokens: &PROMPT[..9], logits: Logits::None }]).unwrap();
    let prefix = std::sync::Arc::new(prefix);
    let mut forked = KvCache::fork(&prefix);
    let tail = m.forward(&mut [SeqInput { cache: &mut forked, tokens: &PROMPT[9..], logits: Logits::All }]).unwrap().remove(0);
    assert!(tail == single_a[9 * v..], "{}", m.simd);

    // Many sequences forked from one prefix (longer than attention's block of shared positions) step together,
    // their attention grouped by the shared prefix, exactly as each alone.
    let long: Vec<u32> = PROMPT.iter().cycle().take(5 * PROMPT.len()).copied().collect();
    let mut prefix = m.new_cache();
    m.forward(&mut [SeqInput { cache: &mut prefix, tokens: &long, logits: Logits::None }]).unwrap();
    let prefix = std::sync::Arc::new(prefix);
    let tails: Vec<Vec<u32>> = (0..20).map(|i| (0..1 + i % 3).map(|j| PROMPT[(5 * i + j) % PROMPT.len()]).collect()).collect();
    let mut caches: Vec<KvCache> = tails.iter().map(|_| KvCache::fork(&prefix)).collect();
    let mut batch: Vec<SeqInput> = caches.iter_mut().zip(&tails).map(|(c, t)| SeqInput { cache: c, tokens: t, logits: Logits::Last }).collect();
    let together = m.forward(&mut batch).unwrap();
    for (i, t) in tails.iter().enumerate() {
        let mut c = KvCache::fork(&prefix);
        let alone = m.forward(&mut [SeqInput { cache: &mut c, tokens: t, logits: Logits::Last }]).unwrap().remove(0);
        assert!(together[i] == alone, "{}: sequence {i} of a batch forked from one prefix", m.simd);
    }
}

#[test]
fn quantized_weights_give_the_exact_f32_logits() {
    use autodidact::model::linear::{Matrix, WeightData};
    let mut m = load();
    let v = m.cfg.vocab_size;
    let mut w = load().weights;
    let deq = |x: &mut Matrix| x.data = WeightData::F32(x.to_f32());
    deq(&mut w.embed);
    for l in &mut w.layers {
        for x in [&mut l.qkv, &mut l.o, &mut l.gate_up, &mut l.down] {
            deq(x);
        }
    }
    let mut exact = Transformer::new(m.cfg.clone(), w);
    // The reference: f32 weights on the best path. Every path's quantized kernels must give the same logits up to
    // summation order (weights are dequantized exactly), and so must every path's f32 kernels.
    let e = full_logits(&exact, &PROMPT);
    let range = e.iter().fold(0f32, |a, x| a.max(x.abs()));
    for simd in Simd::available() {
        m.simd = simd;
        exact.simd = simd;
        for (what, q) in [("quantized", full_logits(&m, &PROMPT)), ("f32", full_logits(&exact, &PROMPT))] {
            let mut max_diff = 0f32;
            let mut top1_same = 0;
            for pos in 0..PROMPT.len() {
                let (a, b) = (&q[pos * v..(pos + 1) * v], &e[pos * v..(pos + 1) * v]);
                max_diff = max_diff.max(a.iter().zip(b).fold(0f32, |acc, (x, y)| acc.max((x - y).abs())));
                top1_same += (argmax(a) == argmax(b)) as usize;
            }
            eprintln!(
                "{simd} {what} kernels vs f32 weights on {}: max |diff| {max_diff} (max |logit| {range}), same top-1 at {top1_same}/{}",
                Simd::best(),
                PROMPT.len()
            );
            assert_eq!(top1_same, PROMPT.len(), "{simd} {what}");
            assert!(max_diff < 1e-3, "{simd} {what}: max |diff| {max_diff}");
        }
    }
}

/// For scripts/dev/iq4-llamacpp.sh: `AUTODIDACT_LOGITS="MODEL.gguf IDS.json OUT.f32"` writes our logits for the
/// token ids in IDS.json (`{"ids": [...]}`) as little-endian f32, positions x vocab.
#[test]
#[ignore]
fn our_logits_on_a_file() {
    let Ok(spec) = std::env::var("AUTODIDACT_LOGITS") else { return };
    let [model, ids, out] = spec.split(' ').collect::<Vec<_>>()[..] else { panic!("AUTODIDACT_LOGITS: three paths") };
    let ids: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ids).unwrap()).unwrap();
    let ids: Vec<u32> = ids["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let m = autodidact::model::LoadedModel::load(model).unwrap();
    std::fs::write(out, common::all_logits(&m.transformer, &ids).iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}
