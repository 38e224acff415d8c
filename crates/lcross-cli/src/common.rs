//! What every command shares: global options, model loading, output.

use anyhow::{Context as _, Result};
use lcross_model::candle_core::{DType, Device};
use lcross_model::{LoadOptions, Model, WeightMode};
use serde::Serialize;

/// Global options.
pub struct Context {
    pub json: bool,
    pub weights: WeightMode,
    /// `--device`: cpu (default), cuda[:N] or metal[:N].
    pub device: String,
    /// `--dtype`: f32 (default), f16 or bf16.
    pub dtype: String,
}

/// Parse `--device`.
pub fn parse_device(s: &str) -> Result<Device> {
    let (kind, ordinal) = match s.split_once(':') {
        Some((k, n)) => (k, n.parse::<usize>().with_context(|| format!("--device {s}: `{n}` is not a device number"))?),
        None => (s, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(ordinal)
            .with_context(|| format!("--device {s}: CUDA is not available (build with `--features cuda` on a machine with the CUDA toolkit)")),
        "metal" => Device::new_metal(ordinal).with_context(|| format!("--device {s}: Metal is not available (build with `--features metal` on macOS)")),
        _ => anyhow::bail!("--device {s}: expected cpu, cuda[:N] or metal[:N]"),
    }
}

/// Parse `--dtype`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        _ => anyhow::bail!("--dtype {s}: expected f32, f16 or bf16"),
    }
}

impl Context {
    /// Load a model by spec with the global weight mode, with a spinner on stderr.
    pub fn load(&self, spec: &str) -> Result<Model> {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        spinner.set_message(format!("loading {spec}"));
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        let opts = self.load_options()?;
        let model = Model::load(spec, &opts).with_context(|| format!("cannot load model `{spec}`"));
        spinner.finish_and_clear();
        let model = model?;
        tracing::info!(model = model.id(), seconds = model.load_seconds(), "loaded");
        Ok(model)
    }

    /// The load options of `--weights`, `--device` and `--dtype`.
    pub fn load_options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions { weight_mode: self.weights, device: parse_device(&self.device)?, dtype: parse_dtype(&self.dtype)? })
    }

    /// What the global options do to numbers, for result keys: weight mode, dtype,
    /// device and the runtime revision.
    pub fn numerics(&self) -> String {
        format!("weights={:?};dtype={};device={};runtime={}", self.weights, self.dtype, self.device, lcross_model::RUNTIME_REVISION).to_lowercase()
    }

    /// Print `value` as JSON (with --json) or call `human`.
    pub fn print<T: Serialize>(&self, value: &T, human: impl FnOnce()) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            human();
        }
        Ok(())
    }
}

/// Parse `1,2,3` into token ids.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',').filter(|p| !p.trim().is_empty()).map(|p| p.trim().parse::<u32>().with_context(|| format!("`{p}` in --ids is not a token id"))).collect()
}
