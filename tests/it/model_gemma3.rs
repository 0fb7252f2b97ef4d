//! Gemma 3 270M (Q4_K_M: Q4_K, Q6_K, Q5_0 and Q8_0 tensors) against llama.cpp on the same file, and its
//! incremental logits against full-sequence logits on every path.
use super::common;

use autodidact::model::gguf::GgufFile;
use autodidact::model::weights::Weights;
use autodidact::model::{Logits, ModelConfig, SeqInput, Transformer};
use autodidact::simd::Simd;

fn load() -> Transformer {
    let path = common::gemma3_model();
    let g = GgufFile::open(&path).unwrap();
    let has_output = g.content.tensor_infos.contains_key("output.weight");
    let cfg = ModelConfig::from_gguf(g.metadata(), has_output, 262144, &path).unwrap();
    let w = Weights::load(&g, &cfg).unwrap();
    Transformer::new(cfg, w)
}

struct Reference {
    ids: Vec<u32>,
    /// Per position, llama.cpp's five largest logits: (token id, logit).
    top5: Vec<Vec<(u32, f32)>>,
}

fn reference() -> Reference {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3_llamacpp_logits.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let top5 = v["top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap() as f32)).collect())
        .collect();
    Reference { ids, top5 }
}

/// llama.cpp's ids of 200 tokens of English prose go through our model: the most likely next token is
/// llama.cpp's at every position where llama.cpp's own top two are not within our measured difference of each
/// other, and llama.cpp's five largest logits at each position are within a bound of ours. (llama.cpp rounds
/// activations to 8 bits for its quantized dot products; we multiply the exactly dequantized weights in f32.)
#[test]
fn logits_agree_with_llama_cpp_on_real_text() {
    let m = load();
    let r = reference();
    let v = m.cfg.vocab_size;
    let mut cache = m.new_cache();
    let ours = m.forward(&mut [SeqInput { cache: &mut cache, tokens: &r.ids, logits: Logits::All }]).unwrap().remove(0);
    let (mut max_diff, mut same_top1, mut contested) = (0f32, 0, 0);
    for (p, top) in r.top5.iter().enumerate() {
        let row = &ours[p * v..(p + 1) * v];
        let best = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) }).0;
        for &(id, logit) in top {
            max_diff = max_diff.max((row[id as usize] - logit).abs());
        }
        if best as u32 == top[0].0 {
            same_top1 += 1;
        } else if top[0].1 - top[1].1 < 0.5 {
            contested += 1;
        } else {
            panic!("position {p}: our top token {best} ({}), llama.cpp's {} ({}), margin {}", row[best], top[0].0, top[0].1, top[0].1 - top[1].1);
        }
    }
    eprintln!("gemma3 vs llama.cpp: top-1 equal at {same_top1}/{} positions ({contested} others within 0.5 of llama.cpp's runner-up), max |diff| over llama.cpp's top-5 logits {max_diff:.4}", r.top5.len());
    assert!(same_top1 >= r.top5.len() * 97 / 100, "top-1 agreement {same_top1}/{}", r.top5.len());
    assert!(max_diff < 1.0, "max |diff| {max_diff}");
}

/// The real file's mixed K-quant projections: logits decoded token by token equal the full-sequence logits bit for
/// bit on every path (the sliding window itself is checked on tiny models).
#[test]
fn incremental_logits_equal_full_sequence_logits_on_every_path() {
    let mut m = load();
    let r = reference();
    let toks = &r.ids[..40];
    let v = m.cfg.vocab_size;
    for simd in Simd::available() {
        m.simd = simd;
        let mut cache = m.new_cache();
        let full = m.forward(&mut [SeqInput { cache: &mut cache, tokens: toks, logits: Logits::All }]).unwrap().remove(0);
        let mut cache = m.new_cache();
        let mut inc = m.forward(&mut [SeqInput { cache: &mut cache, tokens: &toks[..25], logits: Logits::All }]).unwrap().remove(0);
        for t in &toks[25..] {
            inc.extend(m.forward(&mut [SeqInput { cache: &mut cache, tokens: std::slice::from_ref(t), logits: Logits::Last }]).unwrap().remove(0));
        }
        assert_eq!(full.len(), toks.len() * v);
        let same = full.iter().zip(&inc).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{simd}: incremental logits differ from the full sequence's");
    }
}
