//! `lcross cache check|clear`: the result store (`$LCROSS_CACHE/lcross.sqlite`). The
//! checks live in `lcross_core::store`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;
use lcross_core::store::{self, default_store_path};
use serde::Serialize;

use crate::common::Context;

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Check every cached value: SQLite's integrity check and each value's checksum;
    /// exits 1 when something is wrong.
    Check {
        /// Remove the entries whose checksum fails (they are recomputed when next needed).
        #[arg(long)]
        repair: bool,
        /// The database (default: $LCROSS_CACHE/lcross.sqlite, else ~/.cache/lcross/lcross.sqlite).
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Delete the cache (the database and its WAL files): every value is recomputed when
    /// next needed. Run it while no lcross process uses the cache.
    Clear {
        /// The database (default as for `check`).
        #[arg(long)]
        path: Option<PathBuf>,
    },
}

pub fn run(ctx: &Context, cmd: CacheCommand) -> Result<()> {
    match cmd {
        CacheCommand::Check { repair, path } => {
            let r = store::check(&path.unwrap_or_else(default_store_path), repair)?;
            ctx.print(&r, || {
                println!("{}{}", r.path.display(), if r.exists { "" } else { ": no cache yet" });
                println!("  integrity: {}", r.integrity);
                for (kind, n) in &r.entries {
                    println!("  {kind}: {n} entries");
                }
                println!("  failed checksums: {}{}", r.bad_checksums, if r.removed > 0 { format!(" ({} removed)", r.removed) } else { String::new() });
                if r.without_checksum > 0 {
                    println!("  written before checksums: {} (recomputed when used)", r.without_checksum);
                }
            })?;
            if r.is_sound() || (repair && r.integrity == "ok" && r.removed == r.bad_checksums) {
                return Ok(());
            }
            if r.integrity != "ok" {
                bail!("{} is damaged: `lcross cache clear` starts an empty cache (values are recomputed)", r.path.display());
            }
            bail!("{} values failed their checksum: `lcross cache check --repair` removes them (they are recomputed)", r.bad_checksums)
        }
        CacheCommand::Clear { path } => {
            let path = path.unwrap_or_else(default_store_path);
            #[derive(Serialize)]
            struct Cleared {
                removed: Vec<PathBuf>,
            }
            let removed = store::clear(&path)?;
            let out = Cleared { removed };
            ctx.print(&out, || {
                if out.removed.is_empty() {
                    println!("{}: no cache to clear", path.display());
                }
                for p in &out.removed {
                    println!("removed {}", p.display());
                }
            })
        }
    }
}
