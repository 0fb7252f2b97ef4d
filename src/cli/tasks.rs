//! `autodidact tasks`: list suites, write task files for a split, show a task exactly as the model sees it.
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::ModelArgs;
use crate::agent::prompts::{initial_messages, PromptOptions, Prompts};
use crate::agent::suites;
use crate::data::jsonl::write_jsonl_atomic;
use crate::rollout::select::TaskSelection;

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

pub fn run(a: TasksArgs) -> anyhow::Result<()> {
    match a.command {
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
            let (messages, _) = initial_messages(task, &prompts, PromptOptions { fewshot: !no_fewshot, tools_in_system: true })?;
            let m = model.load()?;
            let policy = crate::rollout::EnginePolicy::new(&m, Default::default(), vec![], Box::new(|_| {}));
            let text = m.render_chat(&policy.template_messages(&messages), None, true)?;
            let ids = m.tokenizer.encode(&text)?;
            eprintln!("task {} ({} difficulty {}), {} prompt tokens", task.id, task.suite, task.difficulty, ids.len());
            println!("{text}");
        }
    }
    Ok(())
}
