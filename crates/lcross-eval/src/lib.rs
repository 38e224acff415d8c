//! # lcross-eval
//!
//! Evaluations of steered models on lcross's batched runtime: judges (a local model
//! read through its label probabilities, or any OpenAI-compatible endpoint), open-ended
//! answers scored 0-10 per concept, HARM (harmful-answer and refusal rates on held-out
//! AdvBench prompts), FAIR (gender words in generated vignettes), emotions, and the
//! side effects of steering (fluency, drift on neutral prompts).
//!
//! Every evaluation reports one shape, [`report::EvalReport`]: a metric name and one
//! row per steering condition with mean, standard error and n.

pub mod answers;
pub mod calibrate;
pub mod conditions;
pub mod continuation;
pub mod data_fetch;
pub mod demo;
pub mod error;
pub mod experiments;
pub mod inputs;
pub mod judge;
pub mod metrics;
pub mod pipeline;
pub mod plots;
pub mod report;
pub mod reproduce;
pub mod rubric;
pub mod side_effects;
pub mod stats;

pub use error::{EvalError, Result};
