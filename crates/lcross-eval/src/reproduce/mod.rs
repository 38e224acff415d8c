//! `lcross reproduce`: an experiment grid from a TOML file ([`config`]), its cells and
//! their groups and shards ([`grid`]), finished cells kept as JSONL ([`cells`]), the
//! runner that computes them on the models ([`runner`], with [`crate::pipeline`]) and
//! the report ([`report`]).

pub mod cells;
pub mod config;
pub mod grid;
pub mod report;
pub mod runner;
