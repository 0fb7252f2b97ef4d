//! LoRA adapter files: PEFT names and orientation, round trips, load-time checks, and the inference delta
//! function against the merged model.
use autodidact::model::linear::Input;
use autodidact::model::lora::{read_safetensors, LoraAdapter, LoraConfig, LoraError, Proj, Stacked, ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use autodidact::train::tiny::{tiny_config, tiny_weights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn adapter(targets: &[Proj]) -> LoraAdapter {
    let cfg = tiny_config();
    let mut a = LoraAdapter::new(LoraConfig { r: 4, alpha: 8.0, dropout: 0.05, targets: targets.to_vec(), base_model: "tiny-base".into() }, &cfg, 3).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for l in a.layers.iter_mut() {
        for p in l.values_mut() {
            p.b.iter_mut().for_each(|v| *v = rng.random_range(-0.3..0.3));
        }
    }
    a
}

#[test]
fn fresh_adapter_has_zero_b_and_seeded_a() {
    let cfg = tiny_config();
    let c = LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, targets: vec![Proj::Q, Proj::Down], base_model: "x".into() };
    let a = LoraAdapter::new(c.clone(), &cfg, 1).unwrap();
    let b = LoraAdapter::new(c.clone(), &cfg, 1).unwrap();
    let other = LoraAdapter::new(c, &cfg, 2).unwrap();
    assert_eq!(a, b, "same seed, same adapter");
    assert_ne!(a, other);
    let q = &a.layers[0][&Proj::Q];
    assert!(q.b.iter().all(|&v| v == 0.0));
    let bound = 1.0 / (cfg.hidden_size as f32).sqrt();
    assert!(q.a.iter().all(|v| v.abs() <= bound) && q.a.iter().any(|v| v.abs() > bound / 2.0));
    assert_eq!((q.r, q.d_in, q.d_out), (4, 64, 64));
    let d = &a.layers[1][&Proj::Down];
    assert_eq!((d.d_in, d.d_out), (128, 64));
}

#[test]
fn save_writes_peft_files_and_loads_back() {
    let cfg = tiny_config();
    let a = adapter(&[Proj::Q, Proj::V, Proj::Gate, Proj::Down]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adapter");
    a.save(&out).unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join(ADAPTER_CONFIG)).unwrap()).unwrap();
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["task_type"], "CAUSAL_LM");
    assert_eq!(json["r"], 4);
    assert_eq!(json["lora_alpha"], 8.0);
    assert_eq!(json["bias"], "none");
    assert_eq!(json["base_model_name_or_path"], "tiny-base");
    assert_eq!(json["target_modules"], serde_json::json!(["q_proj", "v_proj", "gate_proj", "down_proj"]));
    let t = read_safetensors(&out.join(ADAPTER_WEIGHTS)).unwrap();
    assert_eq!(t.len(), 2 * 4 * cfg.num_layers);
    let (shape, vals) = &t["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"];
    assert_eq!(shape, &vec![cfg.kv_dim(), 4], "B is out x r");
    assert_eq!(vals, &a.layers[1][&Proj::V].b);
    assert_eq!(t["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"].0, vec![4, cfg.intermediate_size], "A is r x in");
    let back = LoraAdapter::load(&out, &cfg, Some("tiny-base")).unwrap();
    assert_eq!(back, a);
    // Saving again replaces the directory atomically and leaves no temporary siblings.
    a.save(&out).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names, vec!["adapter".to_string()]);
}

#[test]
fn load_rejects_mismatches_with_clear_errors() {
    let cfg = tiny_config();
    let a = adapter(&[Proj::Q, Proj::K]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a");
    a.save(&out).unwrap();
    let e = LoraAdapter::load(&out, &cfg, Some("other-model")).unwrap_err();
    assert!(matches!(e, LoraError::BaseMismatch { .. }), "{e}");
    assert!(e.to_string().contains("tiny-base") && e.to_string().contains("other-model"));
    // A model with another hidden size: shape error naming the tensor.
    let mut big = cfg.clone();
    big.hidden_size = 128;
    let e = LoraAdapter::load(&out, &big, None).unwrap_err().to_string();
    assert!(e.contains("q_proj.lora_A.weight") && e.contains("shape"), "{e}");
    // More layers than the adapter has: missing tensor.
    let mut deep = cfg.clone();
    deep.num_layers = 3;
    let e = LoraAdapter::load(&out, &deep, None).unwrap_err().to_string();
    assert!(e.contains("missing tensor") && e.contains("layers.2"), "{e}");
    // Fewer layers: unexpected tensors.
    let mut shallow = cfg.clone();
    shallow.num_layers = 1;
    let e = LoraAdapter::load(&out, &shallow, None).unwrap_err().to_string();
    assert!(e.contains("does not belong"), "{e}");
    // Unknown target module in the config.
    let p = out.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&p).unwrap().replace("k_proj", "lm_head");
    std::fs::write(&p, text).unwrap();
    let e = LoraAdapter::load(&out, &cfg, None).unwrap_err().to_string();
    assert!(e.contains("unknown target module `lm_head`"), "{e}");
}

#[test]
fn inference_deltas_equal_merged_matrices() {
    let cfg = tiny_config();
    let w = tiny_weights(&cfg, 5);
    let a = adapter(&Proj::ALL);
    let merged = a.merge(&w, &cfg).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let t = 3;
    for (l, (base, mer)) in w.layers.iter().zip(&merged.layers).enumerate() {
        for (stacked, bm, mm) in [
            (Stacked::Qkv, &base.qkv, &mer.qkv),
            (Stacked::O, &base.o, &mer.o),
            (Stacked::GateUp, &base.gate_up, &mer.gate_up),
            (Stacked::Down, &base.down, &mer.down),
        ] {
            let x: Vec<f32> = (0..t * bm.cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut with_delta = vec![0f32; t * bm.rows];
            bm.matmul(autodidact::simd::Simd::active(), &Input::new(&x, t, bm.cols), &mut with_delta);
            let base_out = with_delta.clone();
            a.add_deltas(l, stacked, &cfg, &x, t, &mut with_delta);
            let mut expect = vec![0f32; t * mm.rows];
            mm.matmul(autodidact::simd::Simd::active(), &Input::new(&x, t, mm.cols), &mut expect);
            let d = with_delta.iter().zip(&expect).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
            assert!(d < 1e-4, "layer {l} {stacked:?}: max |diff| {d}");
            let moved = with_delta.iter().zip(&base_out).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
            assert!(moved > 1e-3, "layer {l} {stacked:?}: the adapter changed nothing");
        }
    }
    // The per-projection delta is the right slice of the stacked one.
    let x: Vec<f32> = (0..2 * cfg.hidden_size).map(|i| (i as f32 * 0.37).sin()).collect();
    let dk = a.delta(1, Proj::K, &x, 2).unwrap();
    let mut stacked = vec![0f32; 2 * (cfg.q_dim() + 2 * cfg.kv_dim())];
    a.add_deltas(1, Stacked::Qkv, &cfg, &x, 2, &mut stacked);
    let w = cfg.q_dim() + 2 * cfg.kv_dim();
    assert_eq!(&stacked[cfg.q_dim()..cfg.q_dim() + cfg.kv_dim()], &dk[..cfg.kv_dim()]);
    assert_eq!(&stacked[w + cfg.q_dim()..w + cfg.q_dim() + cfg.kv_dim()], &dk[cfg.kv_dim()..]);
}
