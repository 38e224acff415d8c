//! [`Model`]: a decoder with its tokenizer and chat template, loaded from a `--model` spec.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::cache::KvCache;
use crate::chat::ChatTemplate;
use crate::config::ModelConfig;
use crate::decoder::{BatchRow, Decoder, ForwardOutput, Logits};
use crate::error::{ModelError, Result};
use crate::generate::GenerateOptions;
use crate::gguf::GgufFile;
use crate::hf::HfFiles;
use crate::hooks::Hooks;
use crate::registry::{resolve, ModelLocation};
use crate::scheduler::{generate_batch, GenerationRequest};
use crate::tokenizer::TextTokenizer;
use crate::weights::{WeightMode, WeightSource};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub weight_mode: WeightMode,
    pub device: Device,
    pub dtype: DType,
}

impl LoadOptions {
    /// Options from their names: `weights` "f32" or "quantized", and a device and dtype as
    /// [`parse_device`] and [`parse_dtype`] read them.
    pub fn parse(weights: &str, device: &str, dtype: &str) -> Result<Self> {
        let weight_mode = WeightMode::parse(weights).ok_or_else(|| ModelError::InvalidInput(format!("weights `{weights}`: expected f32 or quantized")))?;
        Ok(Self { weight_mode, device: parse_device(device)?, dtype: parse_dtype(dtype)? })
    }
}

/// A device by name: "cpu", "cuda[:N]" (built with the `cuda` feature) or "metal[:N]"
/// (`metal`).
pub fn parse_device(s: &str) -> Result<Device> {
    let bad = || ModelError::InvalidInput(format!("device `{s}`: expected cpu, cuda[:N] or metal[:N]"));
    let (kind, ordinal) = match s.split_once(':') {
        Some((k, n)) => (k, n.parse::<usize>().map_err(|_| bad())?),
        None => (s, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(ordinal).map_err(|e| {
            ModelError::InvalidInput(format!("device {s}: CUDA is not available (build with `--features cuda` on a machine with the CUDA toolkit): {e}"))
        }),
        "metal" => Device::new_metal(ordinal)
            .map_err(|e| ModelError::InvalidInput(format!("device {s}: Metal is not available (build with `--features metal` on macOS): {e}"))),
        _ => Err(bad()),
    }
}

/// A compute dtype by name: "f32", "f16" or "bf16".
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        _ => Err(ModelError::InvalidInput(format!("dtype `{s}`: expected f32, f16 or bf16"))),
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { weight_mode: WeightMode::F32, device: Device::Cpu, dtype: DType::F32 }
    }
}

/// Tokens that end an assistant turn in the supported families.
const END_OF_TURN_TOKENS: &[&str] = &["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "</s>"];

/// A loaded model: decoder, tokenizer, chat template and where it came from.
pub struct Model {
    location: ModelLocation,
    decoder: Decoder,
    text: ModelText,
    quantization: String,
    options: LoadOptions,
    load_seconds: f64,
    file_hash: std::sync::OnceLock<String>,
}

/// A prompt ready to run: the text given to the tokenizer and its ids.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Prompt {
    pub text: String,
    pub ids: Vec<u32>,
}

/// The text side of a model: tokenizer, chat template and the tokens that end a turn,
/// loaded from the model's files without reading a weight (`lcross tokenize`).
pub struct ModelText {
    id: String,
    tokenizer: TextTokenizer,
    chat: ChatTemplate,
    stop_tokens: Vec<u32>,
}

impl ModelText {
    /// Load the text side of a known id, a `.gguf` path or a HF directory.
    pub fn load(spec: &str) -> Result<Self> {
        let location = resolve(spec).map_err(|reason| ModelError::ModelNotFound { spec: spec.to_string(), reason })?;
        match &location {
            ModelLocation::Gguf { path, .. } => {
                let mut file = GgufFile::open(path)?;
                let config = file.config()?;
                Self::from_gguf(path, &file, &config)
            }
            ModelLocation::HfDir { path, .. } => Self::from_hf(path, &HfFiles::open(path)?),
        }
        .map(|t| t.with_id(location.id()))
    }

    fn with_id(mut self, id: &str) -> Self {
        self.id = id.to_string();
        self
    }

    fn from_gguf(path: &Path, file: &GgufFile, config: &ModelConfig) -> Result<Self> {
        let tokenizer = TextTokenizer::from_gguf(path, file.content())?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(ModelError::field(
                path,
                "tokenizer.ggml.tokens",
                format!("tokenizer has {} tokens, the embedding only {}", tokenizer.vocab_size(), config.vocab_size),
            ));
        }
        let template = file.metadata().get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
        let chat = chat_for(template, &tokenizer)?;
        Ok(Self::new(tokenizer, chat))
    }

    fn from_hf(path: &Path, files: &HfFiles) -> Result<Self> {
        let token_id = |name: &str, tk: &TextTokenizer| files.special_token(name).and_then(|t| tk.token_to_id(&t));
        let probe = TextTokenizer::from_tokenizer_json(&files.tokenizer_json, None, None, false)?;
        let bos = token_id("bos_token", &probe);
        let eos = token_id("eos_token", &probe).or_else(|| config_eos(&files.config));
        let add_bos = files.tokenizer_config.get("add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false);
        let tokenizer = TextTokenizer::from_tokenizer_json(&files.tokenizer_json, bos, eos, add_bos)?;
        let chat = chat_for(files.chat_template(path), &tokenizer)?;
        Ok(Self::new(tokenizer, chat))
    }

    fn new(tokenizer: TextTokenizer, chat: ChatTemplate) -> Self {
        let mut stop_tokens: Vec<u32> = tokenizer.eos_token_id.into_iter().collect();
        if chat.has_template() {
            for t in END_OF_TURN_TOKENS {
                if let Some(id) = tokenizer.token_to_id(t) {
                    if !stop_tokens.contains(&id) {
                        stop_tokens.push(id);
                    }
                }
            }
        }
        Self { id: String::new(), tokenizer, chat, stop_tokens }
    }

    /// The model's id (known id, or file / directory stem).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
    /// The chat template.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat
    }
    /// Tokens that end generation.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }

    /// Build a prompt: see [`Model::prompt`].
    pub fn prompt(&self, text: &str, chat: bool, system: Option<&str>) -> Result<Prompt> {
        let (rendered, add_special) = if chat { (self.chat.render_user(text, system)?, !self.chat.has_template()) } else { (text.to_string(), true) };
        let ids = self.tokenizer.encode(&rendered, add_special)?;
        if ids.is_empty() {
            return Err(ModelError::InvalidInput("empty prompt: it has no tokens".into()));
        }
        Ok(Prompt { text: rendered, ids })
    }
}

impl AsRef<Decoder> for Model {
    fn as_ref(&self) -> &Decoder {
        &self.decoder
    }
}

impl Model {
    /// Load from a known id, a `.gguf` path or a HF directory.
    pub fn load(spec: &str, opts: &LoadOptions) -> Result<Self> {
        let location = resolve(spec).map_err(|reason| ModelError::ModelNotFound { spec: spec.to_string(), reason })?;
        Self::load_location(location, opts)
    }

    /// Load from a resolved location.
    pub fn load_location(location: ModelLocation, opts: &LoadOptions) -> Result<Self> {
        let start = Instant::now();
        let (decoder, text, quantization) = match &location {
            ModelLocation::Gguf { path, .. } => {
                let mut file = GgufFile::open(path)?;
                let config = file.config()?;
                let text = ModelText::from_gguf(path, &file, &config)?.with_id(location.id());
                let quantization = file.dominant_dtype().map(|d| format!("{d:?}")).unwrap_or_else(|| "?".into());
                let mut src = WeightSource::Gguf { file, mode: opts.weight_mode };
                let decoder = Decoder::load(config, &mut src, opts.dtype, &opts.device)?;
                (decoder, text, quantization)
            }
            ModelLocation::HfDir { path, .. } => {
                let files = HfFiles::open(path)?;
                let config = files.model_config()?;
                let text = ModelText::from_hf(path, &files)?.with_id(location.id());
                // SAFETY: the files are memory-mapped read-only; lcross never writes model files
                // and the mapping lives only while the weights are copied out.
                let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files.safetensors) }.map_err(|e| ModelError::InvalidFile {
                    path: path.clone(),
                    format: "safetensors",
                    reason: e.to_string(),
                })?;
                let mut src = WeightSource::HfDir { dir: path.clone(), tensors, arch: config.architecture };
                let decoder = Decoder::load(config, &mut src, opts.dtype, &opts.device)?;
                (decoder, text, "safetensors".to_string())
            }
        };
        Ok(Self { location, decoder, text, quantization, options: opts.clone(), load_seconds: start.elapsed().as_secs_f64(), file_hash: Default::default() })
    }

    /// The id recorded in artifacts (known id, or file / directory stem).
    pub fn id(&self) -> &str {
        self.location.id()
    }
    /// File or directory the model was loaded from.
    pub fn path(&self) -> &Path {
        self.location.path()
    }
    /// Decoder configuration.
    pub fn config(&self) -> &ModelConfig {
        self.decoder.config()
    }
    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.text.tokenizer
    }
    /// The chat template.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.text.chat
    }
    /// Tokens that end generation.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.text.stop_tokens
    }
    /// The text side: tokenizer, chat template, end-of-turn tokens.
    pub fn text(&self) -> &ModelText {
        &self.text
    }
    /// Dominant storage type of the file's weights (e.g. `Q4_1`).
    pub fn quantization(&self) -> &str {
        &self.quantization
    }
    /// sha256 of the model file (for a HF directory: of its config.json and safetensors
    /// files in name order), computed once and remembered across runs in
    /// `~/.cache/lcross/hashes` keyed by path, size and modification time.
    pub fn file_sha256(&self) -> Result<String> {
        if let Some(h) = self.file_hash.get() {
            return Ok(h.clone());
        }
        let files: Vec<PathBuf> = match &self.location {
            ModelLocation::Gguf { path, .. } => vec![path.clone()],
            ModelLocation::HfDir { path, .. } => {
                let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|e| ModelError::io(path, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "safetensors") || p.file_name().is_some_and(|n| n == "config.json"))
                    .collect();
                v.sort();
                v
            }
        };
        let h = crate::hashing::files_sha256(&files)?;
        let _ = self.file_hash.set(h.clone());
        Ok(h)
    }

    /// How the weights are held and computed: weight mode, compute dtype and device, as
    /// `weights=f32;dtype=F32;device=cpu` (part of every cache key).
    pub fn numerics(&self) -> String {
        let device = match self.options.device.location() {
            candle_core::DeviceLocation::Cpu => "cpu".to_string(),
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        };
        let mut numerics = format!("weights={:?};dtype={:?};device={device}", self.options.weight_mode, self.options.dtype).to_lowercase();
        if self.options.weight_mode == crate::WeightMode::Quantized && device == "cpu" {
            // The CPU's Q8_0 kernel decides how activations are quantized (per 32 values
            // with an f32 or f16 scale, or per 256): other numbers at ~1e-4.
            numerics.push_str(";q8_0_kernel=");
            numerics.push_str(crate::linear::q8_0_kernel());
        }
        numerics
    }

    /// Rows in flight that fit this machine when each holds `tokens_per_row` tokens: the
    /// KV cache of all rows within a quarter of the available memory (`MemAvailable` of
    /// /proc/meminfo; 4 GiB assumed where there is none), at most 32 (past that a CPU
    /// gains little). The default batch size of generation.
    pub fn rows_that_fit(&self, tokens_per_row: usize) -> usize {
        let c = self.config();
        let per_row = 2 * c.num_layers * c.num_kv_heads * c.head_dim * 4 * tokens_per_row.max(1);
        let available = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok()))
            .map_or(4usize << 30, |kib| kib.saturating_mul(1024));
        (available / 4 / per_row.max(1)).clamp(1, 32)
    }

    /// The options the model was loaded with.
    pub fn load_options(&self) -> &LoadOptions {
        &self.options
    }

    /// Seconds spent loading.
    pub fn load_seconds(&self) -> f64 {
        self.load_seconds
    }
    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Build a prompt. With `chat`, `text` becomes one user message (plus an optional
    /// system message) rendered by the chat template with the generation prompt, and is
    /// tokenized without extra special tokens (as transformers' `apply_chat_template`).
    /// Without a template the plain format is used and tokenized with the model's default
    /// special tokens, as is plain text.
    pub fn prompt(&self, text: &str, chat: bool, system: Option<&str>) -> Result<Prompt> {
        self.text.prompt(text, chat, system)
    }

    /// A vector as a tensor on the model's device, checked against the hidden size.
    pub fn vector_tensor(&self, values: &[f32]) -> Result<Tensor> {
        let h = self.config().hidden_size;
        if values.len() != h {
            return Err(ModelError::InvalidInput(format!("vector has {} values, but {} has hidden size {h}", values.len(), self.id())));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::InvalidInput(format!("vector value {i} is {} (not finite)", values[i])));
        }
        Ok(Tensor::from_slice(values, h, self.decoder.device())?.to_dtype(self.decoder.dtype())?)
    }

    /// One forward pass (see [`Decoder::forward`]).
    pub fn forward(&self, tokens: &[u32], cache: Option<&mut KvCache>, hooks: &Hooks, logits: Logits) -> Result<ForwardOutput> {
        self.decoder.forward(tokens, cache, hooks, logits)
    }

    /// A fresh KV cache.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config().num_layers)
    }

    /// Several rows in one pass, each with its own tokens and hooks (see
    /// [`Decoder::forward_batch`]).
    pub fn forward_batch(&self, rows: &[BatchRow<'_>], cache: Option<&mut KvCache>, logits: Logits) -> Result<Vec<ForwardOutput>> {
        self.decoder.forward_batch(rows, cache, logits)
    }

    /// Generate up to `opts.max_tokens` tokens after `prompt`, calling `on_token` with
    /// each new id. `hooks.prompt_len` is set to the prompt's length. Returns the new ids.
    /// (A batch of one row of [`generate_batch`].)
    pub fn generate(&self, prompt: &[u32], opts: &GenerateOptions, hooks: &Hooks, mut on_token: impl FnMut(u32) -> Result<()>) -> Result<Vec<u32>> {
        let request = GenerationRequest { prompt: prompt.to_vec(), hooks: hooks.clone(), options: opts.clone() };
        let mut out = generate_batch(&self.decoder, std::slice::from_ref(&request), 1, |_, t| on_token(t))?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Generate many requests in batches of at most `max_rows` rows (see
    /// [`crate::scheduler::generate_batch`]).
    pub fn generate_batch(&self, requests: &[GenerationRequest], max_rows: usize, on_token: impl FnMut(usize, u32) -> Result<()>) -> Result<Vec<Vec<u32>>> {
        generate_batch(&self.decoder, requests, max_rows, on_token)
    }
}

fn config_eos(config: &serde_json::Value) -> Option<u32> {
    match config.get("eos_token_id")? {
        serde_json::Value::Number(n) => n.as_u64().map(|x| x as u32),
        serde_json::Value::Array(a) => a.first()?.as_u64().map(|x| x as u32),
        _ => None,
    }
}

fn chat_for(template: Option<String>, tk: &TextTokenizer) -> Result<ChatTemplate> {
    let name = |id: Option<u32>| id.and_then(|i| tk.id_to_token(i)).unwrap_or_default();
    ChatTemplate::new(template, name(tk.bos_token_id), name(tk.eos_token_id))
}
