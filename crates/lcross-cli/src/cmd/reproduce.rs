//! `lcross reproduce CONFIG`: run an experiment grid (docs/REPRODUCTION.md) with
//! progress, resume and shards; `lcross reproduce --merge DIR...` joins shards.
//! The grid, the runner and the report live in `lcross_eval::reproduce`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use lcross_eval::reproduce::grid::Shard;
use lcross_eval::reproduce::runner::{self, ExperimentSource, RunRequest};

use crate::common::Context;

#[derive(Args)]
pub struct ReproduceArgs {
    /// Experiment file (TOML; see docs/REPRODUCTION.md and experiments/).
    #[arg(required_unless_present = "merge")]
    config: Option<PathBuf>,
    /// A profile of the file (e.g. tiny, quick) overriding its sizes and lists.
    #[arg(long)]
    profile: Option<String>,
    /// Run one shard of the grid: i/n, 0 <= i < n (groups of cells are assigned by a hash
    /// of their models and concept, so every machine agrees without talking).
    #[arg(long)]
    shard: Option<String>,
    /// Results directory (default results/<name>[-<profile>], plus shard-i-of-n/ with --shard).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Join these shard directories into --out (default: their common parent).
    #[arg(long, num_args = 1.., value_name = "DIR", conflicts_with_all = ["config", "profile", "shard"])]
    merge: Vec<PathBuf>,
    /// Only count the grid's cells (per metric, target and, with --shard i/n, per shard);
    /// load and run nothing.
    #[arg(long, conflicts_with = "merge")]
    plan: bool,
}

pub fn run(ctx: &Context, a: ReproduceArgs) -> Result<()> {
    if !a.merge.is_empty() {
        let s = runner::merge_runs(&a.merge, a.out.as_deref())?;
        return ctx.print(&s, || println!("merged {} cells of {} shard(s) into {}", s.cells, a.merge.len(), s.out.display()));
    }
    let config = a.config.as_ref().context("give an experiment file")?;
    let shard = a.shard.as_deref().map(Shard::parse).transpose()?;
    if a.plan {
        let file = lcross_eval::reproduce::config::ExperimentFile::load(config)?;
        let p = runner::plan_summary(&file, a.profile.as_deref(), shard.map(|s| s.count))?;
        return ctx.print(&p, || {
            println!("{}: {} cells in {} groups", p.name, p.cells, p.groups);
            for (m, n) in &p.per_metric {
                println!("  metric {m}: {n}");
            }
            for (t, n) in &p.per_target {
                println!("  target {t}: {n}");
            }
            for (i, n) in p.per_shard.iter().enumerate() {
                println!("  shard {i}/{}: {n}", p.per_shard.len());
            }
        });
    }
    let request = RunRequest { experiment: ExperimentSource::File(config), profile: a.profile.as_deref(), shard, out: a.out.clone(), numerics: ctx.numerics() };
    let load = |id: &str| ctx.load(id).map_err(|e| format!("{e:#}"));
    let s = runner::run(request, &load)?;
    ctx.print(&s, || print!("{}", s.report))
}
