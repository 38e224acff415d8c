//! One module per subcommand.
pub mod bench;
pub mod cache;
pub mod calibrate;
pub mod data;
pub mod demo;
pub mod evaluate;
pub mod experiment;
pub mod maps;
pub mod models;
pub mod reproduce;
pub mod run;
pub mod serve;
pub mod tsne;
pub mod vectors;
