//! `autodidact tasks`: list suites, write task files for a split, show a task exactly as the model sees it.
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::select::TaskSelection;
use super::ModelArgs;
use autodidact::agent::prompts::{initial_messages, PromptOptions, Prompts};
use autodidact::data::jsonl::write_jsonl_atomic;
use autodidact::tasks::suites;

#[derive(Args, Debug)]
pub struct TasksArgs {
    #[command(subcommand)]
    pub command: TasksCommand,
}

#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// List the built-in suites, their difficulties and tools.
    List,
    /// Write the selected tasks to a JSONL file.
    Write {
        #[command(flatten)]
        tasks: TaskSelection,
        #[arg(long)]
        out: PathBuf,
    },
    /// Make answer tasks from question/answer data (JSONL objects or CSV with a header row).
    Make(MakeArgs),
    /// Show the first selected task (or --index N) rendered with the model's chat template.
    Show {
        #[command(flatten)]
        tasks: TaskSelection,
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = 0)]
        index: usize,
        /// Leave the few-shot examples out.
        #[arg(long)]
        no_fewshot: bool,
    },
}

#[derive(Args, Debug)]
pub struct MakeArgs {
    /// Question/answer rows: a .csv file (header row) or JSONL (one object per line).
    #[arg(long)]
    pub input: PathBuf,
    /// The task file to write; with `--split auto`, the stem of three files (`OUT.train.jsonl`, `.dev`, `.test`).
    #[arg(long)]
    pub out: PathBuf,
    /// Built-in tools to offer (comma-separated): calculator, convert, search, open.
    #[arg(long, value_delimiter = ',', default_value = "calculator")]
    pub tools: Vec<String>,
    /// How answers are judged: number, number:ABS_TOL, exact, f1 or f1:THRESHOLD.
    #[arg(long, default_value = "number")]
    pub matcher: String,
    /// train, dev or test; or auto: a seeded split into files by --dev-fraction and --test-fraction (with
    /// --test-fraction 0, train and dev only, for users who keep a test set of their own).
    #[arg(long)]
    pub split: String,
    #[arg(long, default_value_t = 0.1)]
    pub dev_fraction: f64,
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Documents for search/open (JSONL of {"id", "title", "text"}), given to every task.
    #[arg(long)]
    pub documents: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub difficulty: u8,
    #[arg(long, default_value_t = 4)]
    pub max_turns: u32,
    /// Task ids are `<prefix>-<row>` where a row has no id column; default: the input file's stem.
    #[arg(long)]
    pub id_prefix: Option<String>,
    #[arg(long, default_value = "question")]
    pub question_field: String,
    #[arg(long, default_value = "answer")]
    pub answer_field: String,
    #[arg(long, default_value = "aliases")]
    pub aliases_field: String,
    #[arg(long, default_value = "id")]
    pub id_field: String,
}

fn make(a: MakeArgs) -> anyhow::Result<()> {
    use autodidact::data::{Document, Split};
    use autodidact::tasks::taskmake::{make_tasks, parse_matcher, MakeOptions};
    let auto = a.split == "auto";
    let split: Split = if auto { Split::Train } else { a.split.parse().map_err(|e: String| anyhow::anyhow!("--split: {e} or `auto`"))? };
    anyhow::ensure!(
        !auto || (a.dev_fraction >= 0.0 && a.test_fraction >= 0.0 && a.dev_fraction + a.test_fraction < 1.0),
        "--dev-fraction and --test-fraction must be non-negative and leave some rows for train"
    );
    let documents: Vec<Document> = match &a.documents {
        Some(p) => autodidact::data::jsonl::read_jsonl(p, autodidact::data::ReadMode::Strict)?.into_items(),
        None => vec![],
    };
    let stem = a.input.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "task".into());
    let o = MakeOptions {
        question_field: a.question_field,
        answer_field: a.answer_field,
        aliases_field: a.aliases_field,
        id_field: a.id_field,
        id_prefix: a.id_prefix.unwrap_or(stem),
        tools: a.tools,
        matcher: parse_matcher(&a.matcher)?,
        split,
        difficulty: a.difficulty,
        max_turns: a.max_turns,
        documents,
    };
    let mut tasks = make_tasks(&a.input, &o)?;
    if !auto {
        write_jsonl_atomic(&a.out, &tasks)?;
        println!("wrote {} {split} tasks to {}", tasks.len(), a.out.display());
        return Ok(());
    }
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(a.seed));
    let n = tasks.len() as f64;
    // A positive fraction gets at least one task; 0 means no such split at all.
    let count = |fraction: f64, at_least: f64| if fraction > 0.0 { (n * fraction).round().max(at_least) as usize } else { 0 };
    let (n_test, n_dev) = (count(a.test_fraction, 1.0), count(a.dev_fraction, 0.0));
    for (rank, &i) in order.iter().enumerate() {
        tasks[i].split = if rank < n_test {
            Split::Test
        } else if rank < n_test + n_dev {
            Split::Dev
        } else {
            Split::Train
        };
    }
    for s in [Split::Train, Split::Dev, Split::Test] {
        let part: Vec<_> = tasks.iter().filter(|t| t.split == s).collect();
        if part.is_empty() {
            continue;
        }
        let path = PathBuf::from(format!("{}.{s}.jsonl", a.out.display()));
        write_jsonl_atomic(&path, &part)?;
        println!("wrote {} {s} tasks to {}", part.len(), path.display());
    }
    Ok(())
}

pub fn run(a: TasksArgs) -> anyhow::Result<()> {
    match a.command {
        TasksCommand::Make(m) => make(m)?,
        TasksCommand::List => {
            println!("{:<14} {:<12} {:<10} tools", "suite", "difficulty", "max turns");
            for s in suites::all() {
                let (diff, turns) = match s.difficulties() {
                    Some(r) => (format!("{}..={}", r.start(), r.end()), format!("{}", s.max_turns(*r.end()))),
                    None => ("task files".to_string(), "-".to_string()),
                };
                let tools = s.tool_names().map(|t| t.join(", ")).unwrap_or_else(|| "declared by each task".into());
                println!("{:<14} {:<12} {:<10} {}", s.name(), diff, turns, tools);
            }
        }
        TasksCommand::Write { tasks, out } => {
            let t = tasks.tasks()?;
            write_jsonl_atomic(&out, &t)?;
            println!("wrote {} tasks to {}", t.len(), out.display());
        }
        TasksCommand::Show { tasks, model, index, no_fewshot } => {
            let t = tasks.tasks()?;
            let task = t.get(index).ok_or_else(|| anyhow::anyhow!("only {} tasks selected", t.len()))?;
            let prompts = Prompts::embedded()?;
            let (messages, _) = initial_messages(task, &prompts, PromptOptions { fewshot: !no_fewshot, tools_in_system: true, hint: None })?;
            let m = model.load()?;
            let policy = autodidact::rollout::EnginePolicy::new(&m, Default::default(), vec![], Box::new(|_| {}));
            let text = m.render_chat(&policy.template_messages(&messages), None, true)?;
            let ids = m.encode_chat(&policy.template_messages(&messages), None, true)?;
            eprintln!("task {} ({} difficulty {}), {} prompt tokens", task.id, task.suite, task.difficulty, ids.len());
            println!("{text}");
        }
    }
    Ok(())
}
