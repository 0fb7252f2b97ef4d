//! Training throughput on the real default model. Ignored by default (minutes of CPU):
//! `cargo test --release --test train_bench -- --ignored --nocapture`
//! `TRAIN_BENCH_SHAPES=1x256,4x512` selects shapes, `TRAIN_BENCH_REPEATS` the timed steps per shape.
mod common;

use autodidact::model::LoadedModel;
use autodidact::train::bench::{bench_train, peak_rss_mb, BenchParams};
use autodidact::train::TrainModel;

#[test]
#[ignore]
fn bench_default_model() {
    let model = LoadedModel::load(common::default_model().to_str().unwrap()).unwrap();
    let tm = TrainModel::new(model.config(), &model.transformer.weights).unwrap();
    drop(model);
    let mut p = BenchParams::default();
    if let Ok(s) = std::env::var("TRAIN_BENCH_SHAPES") {
        p.shapes = s.split(',').map(|x| {
            let (b, t) = x.split_once('x').expect("shape like 1x256");
            (b.parse().unwrap(), t.parse().unwrap())
        }).collect();
    }
    if let Ok(r) = std::env::var("TRAIN_BENCH_REPEATS") {
        p.repeats = r.parse().unwrap();
    }
    eprintln!("model loaded, RSS peak so far {:?} MB", peak_rss_mb());
    let res = bench_train(&tm, &p, |r| eprintln!("{r}")).unwrap();
    assert_eq!(res.len(), p.shapes.len());
    assert!(res.iter().all(|r| r.tokens_per_s.is_finite() && r.tokens_per_s > 0.0));
}
