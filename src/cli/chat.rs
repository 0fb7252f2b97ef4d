use std::io::{BufRead, Write};

use clap::Args;
use serde_json::{json, Value};

use super::{ModelArgs, SamplingArgs};
use autodidact::sample::{generate, GenRequest};

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System message for the conversation.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(a: ChatArgs) -> anyhow::Result<()> {
    let model = a.model.load()?;
    let fresh = || -> Vec<Value> { a.system.iter().map(|s| json!({"role": "system", "content": s})).collect() };
    let mut messages = fresh();
    let params = a.sampling.params();
    let stdin = std::io::stdin();
    let mut turn = 0u64;
    eprintln!("chatting with {} (/reset starts over, /exit quits)", a.model.model);
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = fresh();
                continue;
            }
            "" => continue,
            _ => {}
        }
        messages.push(json!({"role": "user", "content": line}));
        let prompt = model.encode_chat(&messages, None, true)?;
        let t = std::time::Instant::now();
        let out = generate(&model.transformer, &model.tokenizer, &[GenRequest { prompt, stream: turn }], &params, &mut |_| {})?;
        let reply = &out[0];
        println!("{}", reply.text);
        eprintln!("[{} tokens, {:.1} tokens/s]", reply.tokens.len(), reply.tokens.len() as f64 / t.elapsed().as_secs_f64());
        messages.push(json!({"role": "assistant", "content": reply.text}));
        turn += 1;
    }
    Ok(())
}
