//! The loop's learning step on a tiny model: the filter keeps only the successful episodes, and LoRA training
//! on them raises the probability of exactly those episodes' sampled turns.
use super::common;

use autodidact::agent::episode::{run_episodes, Job, Limits, RunConfig};
use autodidact::agent::prompts::{PromptOptions, Prompts};
use autodidact::agent::scripted::{reference_script, TurnScript};
use autodidact::data::dataset::DatasetRow;
use autodidact::data::{Message, Split, Task, Trajectory};
use autodidact::distil::{filter_to_dir, FilterParams};
use autodidact::model::lora::{LoraAdapter, LoraConfig, Proj};
use autodidact::model::LoadedModel;
use autodidact::tasks::suites::{self, generate_many};
use autodidact::train::model::{next_token_targets, Batch, LoraVars};
use autodidact::train::{train_sft, OptimParams, SftParams, TrainModel, TrainRow};
use common::template_policy::TemplatePolicy;
use common::tiny;

/// Mean log-probability per trained token of `rows` under the base model plus `adapter`.
fn mean_logprob(tm: &TrainModel, adapter: Option<&LoraAdapter>, rows: &[DatasetRow]) -> f64 {
    let vars = adapter.map(|a| LoraVars::from_adapter(a, tm.device()).unwrap());
    let (mut sum, mut n) = (0.0, 0usize);
    for r in rows {
        let seqs = [(r.token_ids.as_slice(), r.loss_mask.as_slice())];
        let lp = tm.target_logprobs(&Batch::new(&[r.token_ids.as_slice()]), vars.as_ref(), None, &next_token_targets(&seqs)).unwrap();
        sum += lp.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        n += r.trained_tokens();
    }
    sum / n as f64
}

#[test]
fn training_on_filtered_successes_raises_their_probability() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), "llama", 3);
    let model = LoadedModel::load(dir.path().to_str().unwrap()).unwrap();
    let tasks: Vec<Task> = generate_many(suites::get("arithmetic").unwrap(), 7, Split::Train, 1, 4).unwrap();
    // Two samples per task: sample 0 follows the reference plan, sample 1 answers wrongly.
    let refs: Vec<&Task> = tasks.iter().chain(tasks.iter()).collect();
    let jobs: Vec<Job> = refs.iter().enumerate().map(|(i, t)| Job { task: t, sample_index: (i / tasks.len()) as u32 }).collect();
    let n = tasks.len();
    let mut solve = reference_script(&refs);
    let script = move |episode: usize, turn: usize, msgs: &[Message]| -> TurnScript {
        if episode < n {
            solve(episode, turn, msgs)
        } else {
            "Answer: -1".into()
        }
    };
    let prompts = Prompts::embedded().unwrap();
    let cfg = RunConfig {
        limits: Limits { max_episode_tokens: 1 << 20, ..Limits::default() },
        prompts: &prompts,
        prompt_options: PromptOptions { fewshot: false, tools_in_system: true, hint: None },
        identity: Default::default(),
        external: &Default::default(),
    };
    let mut trajs: Vec<Trajectory> = Vec::new();
    run_episodes(&mut TemplatePolicy::new(&model, script), &jobs, &cfg, |t| trajs.push(t)).unwrap();
    assert_eq!(trajs.iter().filter(|t| t.verdict.success).count(), n);

    let out = dir.path().join("filter");
    let f = filter_to_dir(&trajs, &FilterParams { keep_per_task: 2, balance: false }, None, Some(model.tokenizer.stop_ids()), &out).unwrap();
    assert_eq!(f.rows.len(), n, "only the successes are kept");
    assert_eq!(f.report.total.dropped["failed"], n);
    assert!(f.rows.iter().all(|r| r.id.ends_with("#0")), "{:?}", f.rows.iter().map(|r| &r.id).collect::<Vec<_>>());
    let failed_rows: Vec<DatasetRow> = trajs.iter().filter(|t| !t.verdict.success).map(|t| autodidact::distil::build_row(t, None).unwrap().row).collect();

    // The tiny model's 96-token context is shorter than an episode; rope extends to any length.
    let mut mcfg = model.config().clone();
    mcfg.max_position_embeddings = 4096;
    let tm = TrainModel::new(&mcfg, &model.transformer.weights).unwrap();
    let before = mean_logprob(&tm, None, &f.rows);
    let adapter =
        LoraAdapter::new(LoraConfig { r: 8, alpha: 16.0, dropout: 0.0, targets: Proj::ALL.to_vec(), base_model: model.base_name.clone() }, &mcfg, 1).unwrap();
    assert_eq!(mean_logprob(&tm, Some(&adapter), &f.rows), before, "a fresh adapter changes nothing");
    let rows: Vec<TrainRow> =
        f.rows.iter().map(|r| TrainRow { id: Some(r.id.clone()), token_ids: r.token_ids.clone(), loss_mask: r.loss_mask.clone() }).collect();
    let optim = OptimParams { lr: 1e-2, warmup: 2, min_lr_ratio: 0.0, epochs: 15, batch_size: 2, save_every: 0, ..OptimParams::SFT };
    let p = SftParams::new(optim, mcfg.max_position_embeddings, dir.path().join("train"));
    let trained = train_sft(&tm, adapter, &rows, &p, &mut |_| {}).unwrap().adapter;
    let after = mean_logprob(&tm, Some(&trained), &f.rows);
    eprintln!("kept episodes: mean log-prob per trained token {before:.3} -> {after:.3}");
    assert!(after > before + 1.0, "kept episodes' log-prob rose only from {before:.3} to {after:.3}");
    // The wrong answers were not trained on: the model's preference for the kept episodes over the dropped
    // ones of the same tasks grows (both share the prompt and the `Answer:` form, so both rise).
    let (fb, fa) = (mean_logprob(&tm, None, &failed_rows), mean_logprob(&tm, Some(&trained), &failed_rows));
    eprintln!("dropped episodes: {fb:.3} -> {fa:.3}");
    assert!(after - fa > before - fb + 0.5, "kept vs dropped: {:.3} before, {:.3} after", before - fb, after - fa);
}
