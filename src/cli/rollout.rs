//! `autodidact rollout` and `autodidact eval`.
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::select::TaskSelection;
use super::{ModelArgs, SamplingArgs};
use autodidact::agent::episode::Limits;
use autodidact::agent::hint::{HintPlacement, HintSource, HintSpec};
use autodidact::agent::metrics::EvalReport;
use autodidact::agent::prompts::{PromptOptions, Prompts};
use autodidact::data::jsonl::{read_jsonl, write_json_atomic};
use autodidact::data::{ReadMode, Trajectory};
use autodidact::rollout::{run_rollout, RolloutParams, RolloutSummary};
use autodidact::tasks::env::EnvConfig;
use autodidact::tasks::external::External;
use autodidact::tasks::mcp::McpConfig;

#[derive(Args, Debug, Clone)]
pub struct EpisodeArgs {
    /// Sampled episodes per task.
    #[arg(long, short = 'k', default_value_t = 4)]
    pub samples: u32,
    /// Tokens one model turn may generate.
    #[arg(long, default_value_t = 160)]
    pub turn_tokens: usize,
    /// Prompt + generated tokens of a whole episode.
    #[arg(long, default_value_t = 3072)]
    pub episode_tokens: usize,
    /// Caps each task's own turn limit.
    #[arg(long)]
    pub max_turns: Option<u32>,
    /// Episodes decoded together (the batch size); memory grows with it.
    #[arg(long, default_value_t = 64)]
    pub max_active: usize,
    /// Leave the suites' few-shot examples out of the prompt.
    #[arg(long)]
    pub no_fewshot: bool,
    /// Folder with suite prompt files (default: the prompts built into the binary, same as prompts/).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// A prompt file for one suite, as SUITE=FILE (repeatable), e.g. `qa=prompts/mine.md`.
    #[arg(long = "prompt-file", value_parser = parse_prompt_file)]
    pub prompt_files: Vec<(String, PathBuf)>,
    /// Sample with privileged context in the prompt (hinted rollouts): skill or plan. Recorded in each
    /// trajectory; training rows take it out again.
    #[arg(long)]
    pub hint: Option<HintSource>,
    /// Where --hint goes: system (end of the system message) or user (end of the task's message).
    #[arg(long, default_value = "system", requires = "hint")]
    pub hint_placement: HintPlacement,
}

fn parse_prompt_file(s: &str) -> Result<(String, PathBuf), String> {
    let (suite, path) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected SUITE=FILE"))?;
    Ok((suite.to_string(), PathBuf::from(path)))
}

impl EpisodeArgs {
    pub fn prompts(&self) -> anyhow::Result<Prompts> {
        let mut p = match &self.prompts {
            Some(d) => Prompts::from_dir(d)?,
            None => Prompts::embedded()?,
        };
        for (suite, path) in &self.prompt_files {
            autodidact::tasks::suites::get(suite)?;
            p = p.with_file(suite, path)?;
        }
        Ok(p)
    }
    pub fn params(&self, sampling: &SamplingArgs, adapter: Option<String>) -> RolloutParams {
        RolloutParams {
            samples_per_task: self.samples,
            sampling: sampling.params(),
            limits: Limits::agent(self.turn_tokens, self.episode_tokens, self.max_turns, self.max_active),
            prompt_options: PromptOptions {
                fewshot: !self.no_fewshot,
                tools_in_system: true,
                hint: self.hint.map(|source| HintSpec { source, placement: self.hint_placement }),
            },
            adapter,
            remote: None,
            external: Default::default(),
        }
    }
}

/// Sampling on OpenAI-compatible servers instead of in this process.
#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Server base URL (repeatable or comma-separated: episodes are spread over the servers), e.g.
    /// http://127.0.0.1:8000 for `autodidact serve` or vLLM. The model is still loaded here for its tokenizer
    /// and chat template.
    #[arg(long = "backend-url", value_delimiter = ',')]
    pub urls: Vec<String>,
    /// The served model name (default: the server's only model).
    #[arg(long = "backend-model")]
    pub model: Option<String>,
    /// Environment variable holding the server's API key.
    #[arg(long = "api-key-env")]
    pub api_key_env: Option<String>,
    /// Requests in flight per server.
    #[arg(long = "backend-concurrency", default_value_t = 64)]
    pub concurrency: usize,
}

impl BackendArgs {
    /// The servers, connected and checked, serving `adapter` (loaded into them) when one is given.
    pub fn remote(&self, adapter: Option<&std::path::Path>) -> anyhow::Result<Option<autodidact::rollout::Remote>> {
        if self.urls.is_empty() {
            return Ok(None);
        }
        let cfg = autodidact::backend::BackendConfig {
            model: self.model.clone(),
            api_key_env: self.api_key_env.clone(),
            concurrency: self.concurrency,
            ..autodidact::backend::BackendConfig::new(self.urls.clone())
        };
        let remote = autodidact::rollout::Remote::connect(&cfg)?;
        Ok(Some(match adapter {
            Some(dir) => remote.with_adapter(&dir.display().to_string(), dir)?,
            None => remote,
        }))
    }
}

/// What `rollout` and `eval` share: the model, the tasks, the episode limits and the sampling.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub tasks: TaskSelection,
    #[command(flatten)]
    pub episodes: EpisodeArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// MCP tool servers for `mcp` tasks: a TOML file of `[servers.NAME]` tables (tasks/README.md).
    #[arg(long)]
    pub mcp_config: Option<PathBuf>,
    /// Environments for `env` tasks: a TOML file of `[envs.NAME]` tables (tasks/README.md).
    #[arg(long)]
    pub env_config: Option<PathBuf>,
}

/// Everything a rollout needs, resolved (tasks and prompts first: bad input fails before the model loads).
struct Prepared {
    tasks: Vec<autodidact::data::Task>,
    prompts: Prompts,
    model: autodidact::model::LoadedModel,
    params: RolloutParams,
}

impl RunArgs {
    fn prepare(&self) -> anyhow::Result<Prepared> {
        let mut tasks = self.tasks.tasks()?;
        let mcp_config = match &self.mcp_config {
            Some(path) => McpConfig::load(path).map_err(anyhow::Error::msg)?,
            None => McpConfig::default(),
        };
        let env_config = match &self.env_config {
            Some(path) => EnvConfig::load(path).map_err(anyhow::Error::msg)?,
            None => EnvConfig::default(),
        };
        let external = External::for_tasks(&mcp_config, &env_config, &mut tasks)?;
        let prompts = self.episodes.prompts()?;
        let remote = self.backend.remote(self.model.adapter.as_deref())?;
        // With a server, the adapter is applied there; here only the tokenizer and template are used.
        let model = if remote.is_some() { autodidact::model::load_model(&self.model.model)? } else { self.model.load()? };
        let mut params = self.episodes.params(&self.sampling, self.model.adapter.as_ref().map(|p| p.display().to_string()));
        params.remote = remote;
        params.external = external;
        Ok(Prepared { tasks, prompts, model, params })
    }
}

#[derive(Args, Debug)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Trajectories file (JSONL); rerunning the same command after an interruption skips what it holds.
    #[arg(long, default_value = "trajectories.jsonl")]
    pub out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Report on an existing trajectories file instead of running the model.
    #[arg(long)]
    pub trajectories: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Output folder: trajectories.jsonl and eval.json.
    #[arg(long, default_value = "eval-out")]
    pub out: PathBuf,
    /// k values for pass@k (each <= --samples).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub pass_k: Vec<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn print_summary(s: &RolloutSummary) {
    eprintln!(
        "{} episodes run ({} already done), {} solved; {:.1} episodes/min, {:.1} generated tokens/s, batch up to {}, {:.1}s",
        s.episodes_run, s.episodes_skipped, s.successes_run, s.episodes_per_minute, s.generated_tokens_per_second, s.max_batch, s.seconds
    );
}

pub fn run(a: RolloutArgs) -> anyhow::Result<()> {
    let _lock = autodidact::lock::OutputLock::for_file(&a.out)?;
    let p = a.run.prepare()?;
    let s = run_rollout(&p.model, &p.prompts, &p.tasks, &p.params, &a.out, a.json)?;
    print_summary(&s);
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!("wrote {}", a.out.display());
    }
    Ok(())
}

pub fn eval(a: EvalArgs) -> anyhow::Result<()> {
    if a.pass_k.iter().any(|&k| k == 0 || k > a.run.episodes.samples as usize) && a.trajectories.is_none() {
        anyhow::bail!("--pass-k values must be between 1 and --samples ({})", a.run.episodes.samples);
    }
    // Held until eval.json is written.
    let _lock = if a.trajectories.is_none() { Some(autodidact::lock::OutputLock::acquire(&a.out)?) } else { None };
    let trajs: Vec<Trajectory> = match &a.trajectories {
        Some(path) => read_jsonl(path, ReadMode::Strict)?.into_items(),
        None => {
            std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
            let p = a.run.prepare()?;
            let path = a.out.join("trajectories.jsonl");
            let s = run_rollout(&p.model, &p.prompts, &p.tasks, &p.params, &path, a.json)?;
            print_summary(&s);
            read_jsonl(&path, ReadMode::Strict)?.into_items()
        }
    };
    let report = EvalReport::from_trajectories(&trajs, &a.pass_k);
    if a.trajectories.is_none() {
        write_json_atomic(&a.out.join("eval.json"), &report)?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.to_table());
    }
    Ok(())
}
