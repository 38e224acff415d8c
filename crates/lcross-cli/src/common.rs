//! What every command shares: global options, model loading, output.

use anyhow::{Context as _, Result};
use lcross_model::{LoadOptions, Model, WeightMode};
use serde::Serialize;

/// Global options.
pub struct Context {
    pub json: bool,
    pub weights: WeightMode,
}

impl Context {
    /// Load a model by spec with the global weight mode, with a spinner on stderr.
    pub fn load(&self, spec: &str) -> Result<Model> {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        spinner.set_message(format!("loading {spec}"));
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        let opts = LoadOptions { weight_mode: self.weights, ..LoadOptions::default() };
        let model = Model::load(spec, &opts).with_context(|| format!("cannot load model `{spec}`"));
        spinner.finish_and_clear();
        let model = model?;
        tracing::info!(model = model.id(), seconds = model.load_seconds(), "loaded");
        Ok(model)
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
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse::<u32>().with_context(|| format!("`{p}` in --ids is not a token id")))
        .collect()
}
