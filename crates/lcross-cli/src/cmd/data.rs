//! `lcross data fetch|list`: the public datasets in the data directory.
//! The manifest lives in `lcross_core::data`, the fetching in `lcross_eval::data_fetch`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use lcross_core::data::{default_data_dir, FileState};
use lcross_eval::data_fetch::{data_status, fetch_data, DataSource, FetchAction};
use serde::Serialize;

use crate::common::Context;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Download the public datasets (CAA, RepE emotions, StereoSet, AdvBench, harmless
    /// instructions) from their origins at pinned commits, checking each file's sha256;
    /// files already there with the right bytes are kept.
    Fetch {
        /// Copy and verify a local mirror with the same layout instead of downloading.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Data directory to fill (default: $LCROSS_DATA, else ~/.cache/lcross/data).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show each dataset file: verified, missing or with other bytes, and its origin.
    List {
        /// Data directory (default: $LCROSS_DATA, else ~/.cache/lcross/data).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Serialize)]
struct FileRow {
    path: &'static str,
    state: &'static str,
    bytes: u64,
    origin: String,
}

pub fn run(ctx: &Context, cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Fetch { from, dir } => {
            let dir = dir.unwrap_or_else(default_data_dir);
            let source = from.map_or_else(DataSource::origins, DataSource::Mirror);
            let report = fetch_data(&dir, &source, |f| {
                if !ctx.json {
                    let what = if f.action == FetchAction::Fetched { "fetched" } else { "present, sha256 ok" };
                    eprintln!("{}: {what}", f.path);
                }
            })?;
            let fetched = report.iter().filter(|f| f.action == FetchAction::Fetched).count();
            ctx.print(&report, || println!("{} files in {} ({fetched} fetched, {} already there)", report.len(), dir.display(), report.len() - fetched))
        }
        DataCommand::List { dir } => {
            let dir = dir.unwrap_or_else(default_data_dir);
            let rows: Vec<FileRow> = data_status(&dir)?
                .into_iter()
                .map(|(f, s)| FileRow {
                    path: f.path,
                    state: match s {
                        FileState::Verified => "verified",
                        FileState::Missing => "missing",
                        FileState::Mismatch => "sha256 mismatch",
                    },
                    bytes: f.bytes,
                    origin: format!("{}@{}:{}", f.repo, &f.commit[..12], f.origin_path),
                })
                .collect();
            ctx.print(&rows, || {
                println!("data directory: {}", dir.display());
                for r in &rows {
                    println!("{:<50} {:<16} {}", r.path, r.state, r.origin);
                }
                if rows.iter().any(|r| r.state != "verified") {
                    println!("fetch them with: lcross data fetch   (or --from DIR for a local mirror)");
                }
            })
        }
    }
}
