//! Training throughput on the real default model. Ignored by default (minutes of CPU):
//! `cargo test --release --test it train_bench -- --ignored --nocapture`
//! `TRAIN_BENCH_SHAPES=1x256,4x512` selects shapes, `TRAIN_BENCH_REPEATS` the timed steps per shape.
use super::common;

use autodidact::model::LoadedModel;
use autodidact::stats::peak_rss_mb;
use autodidact::train::bench::{bench_train, BenchParams};
use autodidact::train::TrainModel;

#[test]
#[ignore]
fn bench_default_model() {
    let model = LoadedModel::load(common::default_model().to_str().unwrap()).unwrap();
    let tm = TrainModel::new(model.config(), &model.transformer.weights).unwrap();
    drop(model);
    let mut p = BenchParams::default();
    if let Ok(s) = std::env::var("TRAIN_BENCH_SHAPES") {
        p.shapes = s
            .split(',')
            .map(|x| {
                let (b, t) = x.split_once('x').expect("shape like 1x256");
                (b.parse().unwrap(), t.parse().unwrap())
            })
            .collect();
    }
    if let Ok(r) = std::env::var("TRAIN_BENCH_REPEATS") {
        p.repeats = r.parse().unwrap();
    }
    eprintln!("model loaded, RSS peak so far {:?} MB", peak_rss_mb());
    let res = bench_train(&tm, &p, |r| eprintln!("{r}")).unwrap();
    assert_eq!(res.len(), p.shapes.len());
    assert!(res.iter().all(|r| r.tokens_per_s.is_finite() && r.tokens_per_s > 0.0));
}

/// Which weight layout candle's CPU matmul prefers for `x W^T` (frozen-linear forward) and `g W` (its backward).
#[test]
#[ignore]
fn bench_matmul_layouts() {
    use candle_core::{Device, Tensor};
    use std::time::Instant;
    let d = Device::Cpu;
    let (m, k, n) = (256, 576, 3072);
    let x = Tensor::randn(0f32, 1., (m, k), &d).unwrap();
    let w = Tensor::randn(0f32, 1., (n, k), &d).unwrap(); // out x in
    let wt = w.t().unwrap().contiguous().unwrap(); // in x out
    let g = Tensor::randn(0f32, 1., (m, n), &d).unwrap();
    let time = |f: &dyn Fn() -> Tensor| {
        let mut v: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[3]
    };
    let gf = 2.0 * (m * k * n) as f64 / 1e9;
    let a = time(&|| x.matmul(&w.t().unwrap()).unwrap());
    let b = time(&|| x.matmul(&wt).unwrap());
    let c = time(&|| g.matmul(&w).unwrap());
    let e = time(&|| g.matmul(&wt.t().unwrap()).unwrap());
    eprintln!("x W^T strided {:.0} GFLOP/s, contiguous W^T {:.0}; g W contiguous {:.0}, strided {:.0}", gf / a, gf / b, gf / c, gf / e);
    assert!(a > 0.0 && b > 0.0);
}
