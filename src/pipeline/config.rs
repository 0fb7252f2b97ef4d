//! The loop's TOML config: every section has defaults, unknown keys are errors (a typo must not silently
//! fall back to a default), and the resolved config is written into the run folder once.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agent::hint::{HintPlacement, HintSource, HintSpec};
use crate::model::lora::Proj;
use crate::train::rl::{Objective, RlCoefs};
use crate::train::OptimParams;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// Run folder name: `<runs_dir>/<name>`.
    pub name: String,
    #[serde(default = "default_runs_dir")]
    pub runs_dir: PathBuf,
    /// A GGUF file, a Hugging Face folder or a hub id.
    #[serde(default = "default_model")]
    pub model: String,
    /// Self-distillation rounds after the round-0 evaluation of the base model.
    pub rounds: usize,
    #[serde(default)]
    pub tasks: TasksConfig,
    /// Suite -> prompt file (format: prompts/README.md) replacing the built-in prompt, e.g. `qa = "my_qa.md"`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub prompt_files: std::collections::BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub rollout: RolloutConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub filter: FilterConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub gate: GateConfig,
    /// The RL objectives' settings (`train.objective = "grpo"` or `"sdar"`).
    #[serde(default)]
    pub rl: RlConfig,
    /// Privileged context for SDAR's teacher and hinted rollouts.
    #[serde(default)]
    pub hint: HintConfig,
    /// How `train.backend = "trl"` launches TRL.
    #[serde(default, skip_serializing_if = "TrlConfig::is_default")]
    pub trl: TrlConfig,
    /// Sample rollouts and evaluations on OpenAI-compatible servers instead of in this process (training stays
    /// here). A resumed run may point at other servers: this section is not part of the run's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<crate::backend::BackendConfig>,
    /// MCP tool servers for `mcp` tasks: `[mcp.servers.NAME]` tables (command, args, env, cwd, scope, timeout_ms).
    #[serde(default, skip_serializing_if = "crate::tasks::mcp::McpConfig::is_empty")]
    pub mcp: crate::tasks::mcp::McpConfig,
    /// Environments for `env` tasks: `[envs.NAME]` tables (command, args, env, cwd, scope, timeout_ms).
    #[serde(default, skip_serializing_if = "crate::tasks::env::EnvConfig::is_empty")]
    pub envs: crate::tasks::env::EnvConfig,
}

fn default_runs_dir() -> PathBuf {
    PathBuf::from("runs")
}
fn default_model() -> String {
    crate::model::DEFAULT_MODEL.to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// Generative suites; empty means all of them, unless task files are given (then: none).
    pub suites: Vec<String>,
    pub difficulties: Vec<u8>,
    /// Train tasks per suite and difficulty: a fixed pool that every round samples from.
    pub train_per: u64,
    /// Dev tasks per suite and difficulty: held out from training, the split the promotion gate decides on.
    pub dev_per: u64,
    /// Test tasks per suite and difficulty: held out from training and from every decision, only reported.
    pub test_per: u64,
    pub seed: u64,
    /// Difficulty ramp: round r rolls out only on the first r difficulties of the generated train tasks (dev
    /// and test always cover all).
    pub ramp: bool,
    /// Task files (paths or glob patterns, relative to the working directory) for each split. A file's tasks
    /// must carry the split they are used for.
    pub train_files: Vec<String>,
    pub dev_files: Vec<String>,
    pub test_files: Vec<String>,
    /// Without `dev_files`: the share of the train files' tasks held back (a slice drawn with `seed`) as dev.
    pub dev_fraction: f64,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            suites: vec![],
            difficulties: vec![1, 2, 3],
            train_per: 20,
            dev_per: 10,
            test_per: 10,
            seed: 0,
            ramp: false,
            train_files: vec![],
            dev_files: vec![],
            test_files: vec![],
            dev_fraction: 0.2,
        }
    }
}

impl TasksConfig {
    /// Whether tasks are generated from the suites: when suites are named, or when no task file is given.
    pub fn generated(&self) -> bool {
        !self.suites.is_empty() || (self.train_files.is_empty() && self.dev_files.is_empty() && self.test_files.is_empty())
    }

    /// The difficulties round `round` (1-based) rolls out on: all of them, or with the ramp the first `round`.
    pub fn rollout_difficulties(&self, round: usize) -> Vec<u8> {
        if self.ramp {
            self.difficulties[..round.min(self.difficulties.len())].to_vec()
        } else {
            self.difficulties.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// Sampled episodes per train task.
    pub samples: u32,
    /// Curriculum: extra samples for train tasks that no earlier round solved.
    pub extra_samples_unsolved: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub turn_tokens: usize,
    pub episode_tokens: usize,
    pub max_active: usize,
    /// Include the suites' few-shot examples in the prompt.
    pub fewshot: bool,
    /// Seeds the rollouts' sampling (with `train.seed`, what differs between repeated runs of one config).
    pub seed: u64,
    /// Hinted rollouts (STaR's rationalization): train tasks this round did not solve are sampled again with
    /// privileged context (`hint.source`) in the prompt; their successes are trained on without it.
    pub hinted: bool,
    /// Strings that end a turn (kept in its text), e.g. `["\n"]` where an action is one line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            samples: 4,
            extra_samples_unsolved: 0,
            temperature: 0.8,
            top_p: 0.95,
            top_k: 0,
            turn_tokens: 160,
            episode_tokens: 2048,
            max_active: 48,
            fewshot: true,
            seed: 0,
            hinted: false,
            stop: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Sampled episodes per test task.
    pub samples: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub pass_k: Vec<usize>,
    /// Also evaluate without the few-shot examples (how much of the gain the model holds on its own).
    pub without_fewshot: bool,
    /// Evaluate the dev split every round. The gate and the choice of the best round decide on it; with the gate
    /// off it only informs, and a run that skips it keeps the last round.
    pub dev: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig { samples: 2, temperature: 0.7, top_p: 0.95, pass_k: vec![1, 2], without_fewshot: true, dev: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    pub keep_per_task: usize,
    pub balance: bool,
    /// Context distillation: train on the sampled turns without the few-shot examples in the context.
    pub drop_fewshot: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig { keep_per_task: 2, balance: false, drop_fewshot: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainMode {
    /// Keep training the current adapter on this round's data.
    Continue,
    /// ReST-EM: a fresh adapter on the base, trained on the union of every round's kept data.
    Restart,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// `sft` trains on the filtered successes; `grpo` and `sdar` on every sampled episode (see `[rl]`).
    pub objective: Objective,
    pub mode: TrainMode,
    pub rank: usize,
    pub alpha: f32,
    pub dropout: f32,
    /// Among q, k, v, o, gate, up, down.
    pub targets: Vec<String>,
    /// Who trains the rounds' SFT: this process (`autodidact`), or TRL + PEFT under `accelerate launch` (`trl`; the
    /// `[trl]` section says how it is started).
    #[serde(skip_serializing_if = "TrainBackend::is_default")]
    pub backend: TrainBackend,
    /// lr, warmup, min_lr_ratio, epochs, batch_size, grad_accum, max_grad_norm, weight_decay, seed, save_every:
    /// the same settings and defaults as `autodidact train`'s (round r trains with seed `seed + r`). The RL
    /// objectives take their own lr, warmup, min_lr_ratio and epochs from `[rl]`.
    #[serde(flatten)]
    pub optim: OptimParams,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            objective: Objective::Sft,
            mode: TrainMode::Continue,
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            targets: ["q", "k", "v", "o", "gate", "up", "down"].map(String::from).to_vec(),
            backend: TrainBackend::Autodidact,
            optim: OptimParams::SFT,
        }
    }
}

impl TrainConfig {
    pub fn projections(&self) -> anyhow::Result<Vec<Proj>> {
        self.targets
            .iter()
            .map(|t| Proj::from_hf_name(t).ok_or_else(|| anyhow::anyhow!("train.targets: unknown projection `{t}` (use q,k,v,o,gate,up,down)")))
            .collect()
    }
}

/// GRPO / SDAR settings (method.md §2). The adapter shape, `batch_size` (episodes per micro-batch), seed,
/// clipping and checkpoints come from `[train]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainBackend {
    /// The in-process CPU trainer (src/train/sft.rs).
    #[default]
    Autodidact,
    /// scripts/trl/sft.py under `accelerate launch`: the same rows, batches, starting adapter and optimiser.
    Trl,
}

impl TrainBackend {
    fn is_default(&self) -> bool {
        *self == TrainBackend::Autodidact
    }
}

/// How `train.backend = "trl"` starts its trainer: `<accelerate> launch <launch_args> <script> <job.json>`, as a
/// child process without a shell and with only `env` as its environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrlConfig {
    /// The `accelerate` program: a path, or a name looked up on PATH (scripts/trl-venv.sh installs one).
    pub accelerate: String,
    /// Arguments of `accelerate launch` before the script, e.g. `["--num_processes", "8", "--config_file", "ds.yaml"]`.
    pub launch_args: Vec<String>,
    pub script: PathBuf,
    /// The launcher's whole environment (e.g. `OMP_NUM_THREADS`, `CUDA_VISIBLE_DEVICES`, `HF_HOME`).
    pub env: std::collections::BTreeMap<String, String>,
    /// A Hugging Face folder with the base model's weights; unset: the model converted to f32 once into
    /// `<run>/trl-base/` (a GGUF's quantized blocks dequantized: the very weights the in-process trainer uses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<PathBuf>,
    /// The dtype the script loads the base in (`float32`, `bfloat16`, `float16`).
    pub dtype: String,
}

impl Default for TrlConfig {
    fn default() -> Self {
        TrlConfig {
            accelerate: ".cache/trl-venv/bin/accelerate".into(),
            launch_args: vec!["--num_processes".into(), "1".into()],
            script: PathBuf::from("scripts/trl/sft.py"),
            env: std::collections::BTreeMap::new(),
            base: None,
            dtype: "float32".into(),
        }
    }
}

impl TrlConfig {
    fn is_default(&self) -> bool {
        *self == TrlConfig::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RlConfig {
    pub lr: f64,
    /// Linear warmup to `lr` over each round's first `warmup` steps (0: `lr` from the first step).
    pub warmup: usize,
    /// After the warmup, cosine decay to `lr * min_lr_ratio` (1: constant).
    pub min_lr_ratio: f64,
    /// Update epochs over each round's episodes.
    pub epochs: usize,
    /// Task groups (all samples of a task) per optimizer step.
    pub groups_per_step: usize,
    /// Reward = success_reward x the verdict's score (1 for a success, the F1 for F1 matchers) - invalid_penalty
    /// x invalid steps.
    pub success_reward: f64,
    pub invalid_penalty: f64,
    /// Floor under a task group's reward std in the advantages (0: plain GRPO).
    pub std_floor: f64,
    pub clip_eps: f64,
    pub kl_coef: f64,
    pub entropy_coef: f64,
    pub sdar_lambda: f64,
    pub sdar_beta: f64,
    /// Compute a task's shared prompt once for all its samples in the training forward and backward.
    pub shared_prefix: bool,
    /// After the RL update, also train on the round's filtered successes (`[filter]`, `[train]`), starting from
    /// the RL adapter: the filtered loop's data with GRPO's signal from the failures.
    pub then_sft: bool,
}

impl Default for RlConfig {
    fn default() -> Self {
        let c = RlCoefs::default();
        let o = OptimParams::RL;
        RlConfig {
            lr: o.lr,
            warmup: o.warmup,
            min_lr_ratio: o.min_lr_ratio,
            epochs: o.epochs,
            groups_per_step: 4,
            success_reward: 10.0,
            invalid_penalty: 0.1,
            std_floor: 0.0,
            clip_eps: c.clip_eps,
            kl_coef: c.kl_coef,
            entropy_coef: c.entropy_coef,
            sdar_lambda: c.sdar_lambda,
            sdar_beta: c.sdar_beta,
            shared_prefix: true,
            then_sft: false,
        }
    }
}

impl LoopConfig {
    /// The RL job's optimiser in round `round`: `[rl]`'s rate, schedule and epochs, everything else from `[train]`.
    pub fn rl_optim(&self, round: usize) -> OptimParams {
        let (t, r) = (&self.train.optim, &self.rl);
        OptimParams { lr: r.lr, warmup: r.warmup, min_lr_ratio: r.min_lr_ratio, epochs: r.epochs, seed: t.seed + round as u64, ..*t }
    }
}

impl RlConfig {
    pub fn coefs(&self) -> RlCoefs {
        RlCoefs { clip_eps: self.clip_eps, kl_coef: self.kl_coef, entropy_coef: self.entropy_coef, sdar_lambda: self.sdar_lambda, sdar_beta: self.sdar_beta }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HintConfig {
    /// `skill` (prompts/skills/<suite>.md) or `plan` (a generated task's reference calls; the skill text for
    /// tasks without one).
    pub source: HintSource,
    /// `system` (the end of the system message) or `user` (the end of the task's message).
    pub placement: HintPlacement,
}

impl HintConfig {
    pub fn spec(&self) -> HintSpec {
        HintSpec { source: self.source, placement: self.placement }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// Keep a round's adapter only if test success does not fall beyond noise; otherwise roll it back.
    pub enabled: bool,
    /// Noise = z standard errors of the difference of the two success rates.
    pub z: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig { enabled: true, z: 1.0 }
    }
}

impl LoopConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let cfg: LoopConfig = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        cfg.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let bad = |field: &str, why: &str| Err(anyhow::anyhow!("field `{field}`: {why}"));
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            return bad("name", "must be a plain folder name");
        }
        if self.tasks.difficulties.is_empty() {
            return bad("tasks.difficulties", "must list at least one difficulty");
        }
        let t = &self.tasks;
        if t.generated() && (t.train_per == 0 || t.dev_per == 0 || t.test_per == 0) {
            return bad("tasks.train_per / tasks.dev_per / tasks.test_per", "must be positive");
        }
        if !t.generated() && t.train_files.is_empty() {
            return bad("tasks.train_files", "task files for dev or test need train tasks too (train_files, or name generated suites)");
        }
        if !t.generated() && t.test_files.is_empty() {
            return bad("tasks.test_files", "a run needs a test split (test_files, or name generated suites)");
        }
        if !(t.dev_fraction > 0.0 && t.dev_fraction < 1.0) {
            return bad("tasks.dev_fraction", "must be between 0 and 1 (exclusive)");
        }
        if self.rollout.samples == 0 || self.eval.samples == 0 {
            return bad("rollout.samples / eval.samples", "must be positive");
        }
        if let Some(&k) = self.eval.pass_k.iter().find(|&&k| k == 0 || k > self.eval.samples as usize) {
            return bad("eval.pass_k", &format!("{k} must be between 1 and eval.samples ({})", self.eval.samples));
        }
        if !self.eval.dev && self.gate.enabled {
            return bad("eval.dev", "the gate decides on the dev split: evaluate it, or set gate.enabled = false");
        }
        if self.filter.keep_per_task == 0 {
            return bad("filter.keep_per_task", "must be at least 1");
        }
        let o = &self.train.optim;
        if o.batch_size == 0 || o.grad_accum == 0 || o.epochs == 0 || self.train.rank == 0 {
            return bad("train", "rank, epochs, batch_size and grad_accum must be positive");
        }
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad("train.lr", "must be positive");
        }
        self.train.projections()?;
        if self.rollout.hinted && self.train.objective.is_rl() {
            return bad("rollout.hinted", "hinted rollouts feed the filtered (sft) loop; SDAR uses the hint through its teacher");
        }
        if self.train.backend == TrainBackend::Trl && self.train.objective.is_rl() {
            return bad("train.backend", "the TRL backend trains the filtered loop's SFT rounds; GRPO and SDAR run in this process");
        }
        if !matches!(self.trl.dtype.as_str(), "float32" | "bfloat16" | "float16") {
            return bad("trl.dtype", "must be float32, bfloat16 or float16");
        }
        if self.rl.then_sft && !self.train.objective.is_rl() {
            return bad("rl.then_sft", "follows an RL update: set train.objective to `grpo` or `sdar`");
        }
        if self.train.objective.is_rl() {
            if self.rollout.samples < 2 {
                return bad("rollout.samples", "GRPO and SDAR compare a task's samples with each other: at least 2 per task");
            }
            if self.train.mode != TrainMode::Continue {
                return bad("train.mode", "the RL objectives update the current adapter on-policy: use `continue`");
            }
            if self.rollout.top_p < 1.0 || self.rollout.top_k > 0 || self.rollout.temperature.is_nan() || self.rollout.temperature <= 0.0 {
                return bad(
                    "rollout.top_p / rollout.top_k / rollout.temperature",
                    "RL scores samples under the distribution they came from: sample at a temperature > 0 with top_p = 1 and top_k = 0",
                );
            }
            let r = &self.rl;
            if !(r.lr.is_finite() && r.lr > 0.0) || r.epochs == 0 || r.groups_per_step == 0 {
                return bad("rl", "lr, epochs and groups_per_step must be positive");
            }
            if ![r.success_reward, r.invalid_penalty, r.std_floor, r.clip_eps, r.kl_coef, r.entropy_coef, r.sdar_lambda, r.sdar_beta]
                .iter()
                .all(|v| v.is_finite() && *v >= 0.0)
            {
                return bad("rl", "rewards and coefficients must be finite and not negative");
            }
        }
        for s in &self.tasks.suites {
            crate::tasks::suites::get(s).map_err(|e| anyhow::anyhow!("field `tasks.suites`: {e}"))?;
        }
        Ok(())
    }

    pub fn run_dir(&self) -> PathBuf {
        self.runs_dir.join(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> anyhow::Result<LoopConfig> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text)?;
        LoopConfig::load(&path)
    }

    #[test]
    fn ramp_adds_one_difficulty_per_round() {
        let mut t = TasksConfig { difficulties: vec![1, 2, 3], ..TasksConfig::default() };
        assert_eq!(t.rollout_difficulties(1), vec![1, 2, 3]);
        t.ramp = true;
        let rounds: Vec<Vec<u8>> = (1..=4).map(|r| t.rollout_difficulties(r)).collect();
        assert_eq!(rounds, vec![vec![1], vec![1, 2], vec![1, 2, 3], vec![1, 2, 3]]);
    }

    #[test]
    fn shipped_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let cfg = LoopConfig::load(&p).unwrap_or_else(|e| panic!("{e:#}"));
                assert_eq!(p.file_stem().unwrap().to_str().unwrap(), cfg.name, "a config's name is its file name");
                n += 1;
            }
        }
        assert!(n >= 2, "a quickstart and a fuller config");
    }

    /// `train.backend = "trl"` with its `[trl]` section survives the pinned config's round trip; it trains SFT only;
    /// a config without either pins exactly as before they existed.
    #[test]
    fn the_trl_backend_is_configured_and_pinned() {
        let cfg = load_str(
            "name = \"x\"\nrounds = 1\n[train]\nbackend = \"trl\"\n[trl]\nlaunch_args = [\"--num_processes\", \"8\"]\nenv = { OMP_NUM_THREADS = \"4\" }\n",
        )
        .unwrap();
        assert_eq!((cfg.train.backend, cfg.trl.launch_args.len(), cfg.trl.env["OMP_NUM_THREADS"].as_str()), (TrainBackend::Trl, 2, "4"));
        let back: LoopConfig = toml::from_str(&toml::to_string_pretty(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        let plain = toml::to_string_pretty(&load_str("name = \"x\"\nrounds = 1\n").unwrap()).unwrap();
        assert!(!plain.contains("backend") && !plain.contains("[trl]"), "{plain}");
        let e = format!("{:#}", load_str("name = \"x\"\nrounds = 1\n[train]\nbackend = \"trl\"\nobjective = \"grpo\"\n[rollout]\ntop_p = 1.0\n").unwrap_err());
        assert!(e.contains("train.backend"), "{e}");
        let e = format!("{:#}", load_str("name = \"x\"\nrounds = 1\n[train]\nbackend = \"torchtune\"\n").unwrap_err());
        assert!(e.contains("c.toml") && e.contains("torchtune"), "{e}");
    }

    #[test]
    fn typos_and_bad_values_name_the_file_line_and_field() {
        let e = format!("{:#}", load_str("name = \"x\"\nrounds = 1\n[rollout]\nsampels = 3\n").unwrap_err());
        assert!(e.contains("c.toml") && e.contains("line 4") && e.contains("sampels"), "{e}");
        let e = format!("{:#}", load_str("name = \"x\"\nrounds = 1\n[eval]\nsamples = 2\npass_k = [4]\n").unwrap_err());
        assert!(e.contains("eval.pass_k"), "{e}");
        let e = format!("{:#}", load_str("name = \"x\"\nrounds = 1\n[tasks]\nsuites = [\"nope\"]\n").unwrap_err());
        assert!(e.contains("tasks.suites") && e.contains("nope"), "{e}");
        let e = format!("{:#}", load_str("name = \"../x\"\nrounds = 1\n").unwrap_err());
        assert!(e.contains("`name`"), "{e}");
        let cfg = load_str("name = \"x\"\nrounds = 1\n[prompt_files]\nqa = \"my_qa.md\"\n[tasks]\ntrain_files = [\"a/*.jsonl\"]\ntest_files = [\"t.jsonl\"]\n")
            .unwrap();
        assert_eq!(cfg.prompt_files["qa"], Path::new("my_qa.md"));
        assert!(!cfg.tasks.generated(), "task files without suites: no generated tasks");
        let text = toml::to_string_pretty(&cfg).unwrap();
        assert_eq!(toml::from_str::<LoopConfig>(&text).unwrap(), cfg, "the pinned config reads back");
        let e = format!("{:#}", load_str("name = \"x\"\nrounds = 1\n[tasks]\ndev_files = [\"d.jsonl\"]\n").unwrap_err());
        assert!(e.contains("tasks.train_files"), "{e}");
        let e = format!("{:#}", load_str("name = \"x\"\nrounds = 1\n[eval]\ndev = false\n").unwrap_err());
        assert!(e.contains("eval.dev") && e.contains("gate"), "{e}");
        assert!(!load_str("name = \"x\"\nrounds = 1\n[eval]\ndev = false\n[gate]\nenabled = false\n").unwrap().eval.dev);
        let cfg = load_str("name = \"x\"\nrounds = 2\n[train]\nmode = \"restart\"\n").unwrap();
        assert_eq!((cfg.rounds, cfg.train.mode, cfg.rollout.samples), (2, TrainMode::Restart, 4));
        let e = format!("{:#}", load_str("name = \"x\"\nrounds = 1\n[rl]\nthen_sft = true\n").unwrap_err());
        assert!(e.contains("rl.then_sft") && e.contains("grpo"), "{e}");
        let rl = "name = \"x\"\nrounds = 1\n[rollout]\ntop_p = 1.0\n[train]\nobjective = \"grpo\"\n[rl]\nthen_sft = true\nwarmup = 4\n";
        let cfg = load_str(rl).unwrap();
        assert!(cfg.rl.then_sft && cfg.rl.warmup == 4);
    }

    /// configs/README.md's optimiser table shows the values the code uses (the CLI's --help prints the same).
    #[test]
    fn the_documented_optimiser_defaults_are_the_codes() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/README.md")).unwrap();
        let (s, r) = (OptimParams::SFT, OptimParams::RL);
        let rows: [(&str, String, String); 10] = [
            ("lr", s.lr.to_string(), r.lr.to_string()),
            ("warmup", s.warmup.to_string(), r.warmup.to_string()),
            ("min_lr_ratio", s.min_lr_ratio.to_string(), r.min_lr_ratio.to_string()),
            ("epochs", s.epochs.to_string(), r.epochs.to_string()),
            ("batch_size", s.batch_size.to_string(), r.batch_size.to_string()),
            ("grad_accum", s.grad_accum.to_string(), r.grad_accum.to_string()),
            ("max_grad_norm", s.max_grad_norm.to_string(), r.max_grad_norm.to_string()),
            ("weight_decay", s.weight_decay.to_string(), r.weight_decay.to_string()),
            ("seed", s.seed.to_string(), r.seed.to_string()),
            ("save_every", s.save_every.to_string(), r.save_every.to_string()),
        ];
        for (key, sft, rl) in rows {
            let row = format!("| `{key}` | {sft} | {rl} |");
            assert!(text.contains(&row), "configs/README.md lacks `{row}`");
        }
        // The loop's defaults are these values.
        let c = toml::from_str::<LoopConfig>("name = \"x\"\nrounds = 1\n").unwrap();
        assert_eq!(c.train.optim, s);
        let o = c.rl_optim(0);
        assert_eq!((o.lr, o.warmup, o.min_lr_ratio, o.epochs, o.batch_size), (r.lr, r.warmup, r.min_lr_ratio, r.epochs, r.batch_size));
        // `[train]` keeps refusing unknown keys with its settings flattened in, and reads them.
        let e = toml::from_str::<LoopConfig>("name = \"x\"\nrounds = 1\n[train]\nlr = 0.001\nlearning_rate = 2\n").unwrap_err().to_string();
        assert!(e.contains("learning_rate"), "{e}");
        let c = toml::from_str::<LoopConfig>("name = \"x\"\nrounds = 1\n[train]\nlr = 0.001\nmin_lr_ratio = 0.5\n").unwrap();
        assert_eq!((c.train.optim.lr, c.train.optim.min_lr_ratio, c.train.optim.epochs), (0.001, 0.5, s.epochs));
    }
}
