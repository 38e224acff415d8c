//! `lcross demo`: the built-in default job.

use anyhow::Result;
use clap::Args;
use lcross_model::{Hooks, Sampling, DEFAULT_MODEL};

use crate::cmd::run::generate_with;
use crate::common::Context;

#[derive(Args)]
pub struct DemoArgs {
    /// Model to chat with.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    model: String,
    /// Maximum new tokens per answer.
    #[arg(long, default_value_t = 60)]
    max_tokens: usize,
}

const QUESTIONS: &[&str] = &[
    "In one sentence, what is a steering vector in a language model?",
    "Name two things a small language model is good at.",
];

pub fn run(ctx: &Context, a: DemoArgs) -> Result<()> {
    let model = ctx.load(&a.model)?;
    let c = model.config();
    eprintln!(
        "{}: {} layers, hidden size {}, {} weights held as {:?}, loaded in {:.1} s",
        model.id(), c.num_layers, c.hidden_size, model.quantization(), ctx.weights, model.load_seconds()
    );
    for q in QUESTIONS {
        println!("\n> {q}");
        let prompt = model.prompt(q, true, None)?;
        generate_with(ctx, &model, &prompt, a.max_tokens, Sampling::Greedy, &Hooks::none())?;
    }
    Ok(())
}
