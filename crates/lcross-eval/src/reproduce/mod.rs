//! `lcross reproduce`: an experiment grid from a TOML file ([`config`]), its cells and
//! their groups and shards ([`grid`]), finished cells kept as JSONL ([`cells`]), and the
//! report ([`report`]). The cells are computed by the CLI's runner for now (it reuses
//! the extraction and alignment code that still lives there).

pub mod cells;
pub mod config;
pub mod grid;
pub mod report;
