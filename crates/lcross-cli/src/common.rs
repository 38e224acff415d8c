//! What every command shares: global options, model loading, output.

use anyhow::{Context as _, Result};
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
        Ok(LoadOptions { weight_mode: self.weights, device: lcross_model::parse_device(&self.device)?, dtype: lcross_model::parse_dtype(&self.dtype)? })
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
