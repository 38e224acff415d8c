//! # lcross-model
//!
//! The LLM runtime of lcross: loads GGUF files and Hugging Face directories of the
//! llama, qwen2 and gemma3 families, tokenizes exactly like the model's own tokenizer,
//! renders its chat template, runs the forward pass with named hooks on the residual
//! stream (`resid_pre`, `attn_out`, `mlp_out`, `resid_post` of each block) for capture
//! and intervention (add, ablate, cap), and generates with a KV cache.
//!
//! ```no_run
//! use lcross_model::{HookName, Model, LoadOptions, Hooks, Logits};
//! let model = Model::load("smollm2-135m-instruct", &LoadOptions::default())?;
//! let prompt = model.prompt("What is the capital of France?", true, None)?;
//! let out = model.forward(&prompt.ids, None, &Hooks::capture_last(&[15]), Logits::None)?;
//! let state = out.captures[&HookName::resid_post(15)].to_vec2::<f32>()?; // (1, hidden)
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cache;
pub mod chat;
pub mod config;
mod decode_attention;
pub mod decoder;
mod embedding;
pub mod error;
pub mod flops;
pub mod generate;
pub mod gguf;
pub mod hashing;
pub mod hf;
pub mod hooks;
pub mod interrupt;
pub mod linear;
pub mod model;
mod q8_pad;
mod q8_tiles;
pub mod registry;
pub mod scheduler;
mod skinny_gemm;
pub mod tokenizer;
mod transpose;
pub mod weights;

pub use cache::KvCache;
pub use candle_core::{Device, Tensor};
pub use chat::{ChatTemplate, Message};
pub use config::{Architecture, ModelConfig};
pub use decoder::{BatchRow, BatchState, ForwardOutput, Logits, MAX_STEERING_NORM};
pub use error::{ModelError, Result};
pub use generate::{argmax, GenerateOptions, Sampling, TextStream};
pub use hooks::{Capture, CapturePositions, HookName, HookPoint, Hooks, Intervention, InterventionKind, Positions};
pub use model::{parse_device, parse_dtype, LoadOptions, Model, ModelText, Prompt};
pub use registry::{models_dir, resolve, ModelLocation, DEFAULT_MODEL, KNOWN_MODELS};
pub use scheduler::{BatchGenerator, FinishReason, GenerationRequest, StepEvent, TokenLogprob};
pub use tokenizer::TextTokenizer;
pub use weights::WeightMode;

/// Revision of the forward pass's arithmetic, part of every cache key: bump it whenever
/// a change to the runtime can change a number it computes (so no cache serves values
/// computed by an older forward). 2: batched forward (grouped-query attention without
/// repeated K/V, rotary tables at load). 3: dense linear layers on few rows as `W x^T`.
/// 4: q/k/v and gate/up stacked into one product each (the gemm's blocking can move
/// the last bits), decode-step attention in one CPU kernel (another summation order).
/// 5: products of 8..=32 rows on AVX2 CPUs in lcross's own kernel (sums over k in
/// order, fused multiply-adds). 6: the same products on AVX-512 CPUs in its AVX-512
/// build (before, its AVX2 build ran there). 7: quantized Q8_0 weights padded to whole
/// 256-value superblocks on CPUs with AVX-512-VNNI / AVX-VNNI, so candle's repacked
/// kernel runs (it quantizes the activations per 256 values instead of 32). 8: on
/// AVX-512-VNNI CPUs, Q8_0 weights in lcross's own kernel (`q8_tiles.rs`: activations
/// per 32 values again, with f32 scales); the Q8_0 kernel is part of quantized keys.
pub const RUNTIME_REVISION: u32 = 8;
pub use candle_core;
