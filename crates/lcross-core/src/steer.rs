//! Steering, in one place: what a steering condition is (a vector, a beta or `auto`, the
//! hook point, the positions and the intervention), how it is parsed and shown, and the
//! hooks it becomes. The CLI, the evaluations, the reproduce runner and the server all
//! build their hooks here.

use std::fmt;

use lcross_model::{HookName, Hooks, Model};
pub use lcross_model::{HookPoint, InterventionKind, Positions};

use crate::error::{CoreError, Result};
use crate::steering::{Method, SteeringVector};

/// A beta as a user gives it: a number, or `auto` (the calibrated beta stored in each
/// vector's metadata by `lcross calibrate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Beta {
    Value(f64),
    Auto,
}

/// Whether `beta` can scale an f32 vector: finite and within f32's range.
fn usable(beta: f64) -> bool {
    beta.is_finite() && beta.abs() <= f32::MAX as f64
}

impl Beta {
    /// Parse a number within f32's range (betas scale f32 vectors) or `auto`.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        match t.parse::<f64>() {
            Ok(v) if usable(v) => Ok(Self::Value(v)),
            _ => Err(CoreError::BadValue { what: "beta".into(), value: s.to_string(), expected: "a finite number within f32's range, or `auto`".into() }),
        }
    }

    /// The number for `vector` (`auto` reads its calibration).
    pub fn resolve(&self, vector: Option<&SteeringVector>) -> Result<f64> {
        match (self, vector) {
            (Self::Value(v), _) => Ok(*v),
            (Self::Auto, Some(sv)) => sv.metadata.calibrated_beta(),
            (Self::Auto, None) => {
                Err(CoreError::BadValue { what: "beta".into(), value: "auto".into(), expected: "a number (auto needs a steering vector)".into() })
            }
        }
    }
}

impl fmt::Display for Beta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Beta::Value(v) => write!(f, "{v}"),
            Beta::Auto => f.write_str("auto"),
        }
    }
}

/// Parse `1,2,auto` (already split on commas).
pub fn parse_betas(items: &[String]) -> Result<Vec<Beta>> {
    items.iter().map(|s| Beta::parse(s)).collect()
}

/// More layers than any model has: `parse_layers` refuses numbers (and lists) past it
/// before expanding a range, so `0-1000000000` is an error, not an 8 GB list.
pub const MAX_LAYERS: usize = 4096;

/// Parse layers: `12`, `12,13,14` or `12-14` (0-based; ranges inclusive; below
/// [`MAX_LAYERS`], checked against the model by the caller).
pub fn parse_layers(s: &str) -> Result<Vec<usize>> {
    let bad =
        |value: &str| CoreError::BadValue { what: "layers".into(), value: value.to_string(), expected: "layer numbers such as 12, 12,13 or 10-14".into() };
    let number = |x: &str| x.trim().parse::<usize>().map_err(|_| bad(s));
    let too_many = |part: &str| CoreError::BadValue {
        what: "layers".into(),
        value: part.to_string(),
        expected: format!("at most {MAX_LAYERS} layers numbered below {MAX_LAYERS} (no model has more; each is then checked against the model)"),
    };
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(CoreError::BadValue {
                        what: "layer range".into(),
                        value: part.into(),
                        expected: "a range from low to high, e.g. 10-14".into(),
                    });
                }
                if b >= MAX_LAYERS || out.len() + (b - a + 1) > MAX_LAYERS {
                    return Err(too_many(part));
                }
                out.extend(a..=b);
            }
            None => {
                let l = number(part)?;
                if l >= MAX_LAYERS || out.len() >= MAX_LAYERS {
                    return Err(too_many(part));
                }
                out.push(l)
            }
        }
    }
    if out.is_empty() {
        return Err(bad(s));
    }
    Ok(out)
}

/// Parse positions: `all`, `prompt-last`, `generated`, `prompt-last+generated`, `from:N`.
pub fn parse_positions(s: &str) -> Result<Positions> {
    Positions::parse(s.trim()).ok_or_else(|| CoreError::BadValue {
        what: "positions".into(),
        value: s.to_string(),
        expected: "all, prompt-last, generated, prompt-last+generated or from:N".into(),
    })
}

/// Parse a hook point name (`resid_pre`, `attn_out`, `mlp_out`, `resid_post`).
pub fn parse_hook(s: &str) -> Result<HookPoint> {
    HookPoint::parse(s).ok_or_else(|| CoreError::BadValue {
        what: "hook point".into(),
        value: s.to_string(),
        expected: "resid_pre, attn_out, mlp_out or resid_post".into(),
    })
}

/// Parse an intervention name (`add`, `ablate`, `cap`).
pub fn parse_intervention(s: &str) -> Result<InterventionKind> {
    InterventionKind::parse(s).ok_or_else(|| CoreError::BadValue { what: "intervention".into(), value: s.to_string(), expected: "add, ablate or cap".into() })
}

/// Where a vector is added unless told: everywhere for CAA (mean-difference) vectors,
/// the last prompt token and generated tokens for RepE (PCA) vectors; transferred
/// vectors follow the method of their source (recorded in the provenance), else CAA's.
pub fn default_positions(sv: &SteeringVector) -> Positions {
    let source_method = sv.metadata.provenance.as_ref().and_then(|p| p.pointer("/source_vector/method")).and_then(|m| m.as_str()).map(String::from);
    match (sv.metadata.method, source_method.as_deref()) {
        (Method::Pca, _) | (Method::Transferred, Some("pca")) => Positions::PromptLastAndGenerated,
        _ => Positions::All,
    }
}

/// Where and how a vector acts, apart from the vector and its beta: the hook point, the
/// positions and the intervention. `Site::default()` adds the vector where it was read
/// (its metadata's hook point, `resid_post` unless extracted elsewhere) at its default
/// positions ([`default_positions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Site {
    /// None: the vector's own hook point.
    pub point: Option<HookPoint>,
    /// None: the vector's default positions.
    pub positions: Option<Positions>,
    pub intervention: InterventionKind,
}

impl Site {
    /// A site from optional user strings (`--hook`, `--positions`, `--intervention`);
    /// what is not given keeps its default.
    pub fn parse(hook: Option<&str>, positions: Option<&str>, intervention: Option<&str>) -> Result<Self> {
        Ok(Self {
            point: hook.map(parse_hook).transpose()?,
            positions: positions.map(parse_positions).transpose()?,
            intervention: intervention.map(parse_intervention).transpose()?.unwrap_or_default(),
        })
    }

    /// Steering with `vector` at `beta` at this site.
    pub fn steer<'a>(&self, vector: &'a SteeringVector, beta: f64) -> Steering<'a> {
        Steering {
            vector,
            beta,
            positions: self.positions.unwrap_or_else(|| default_positions(vector)),
            point: self.point.unwrap_or(vector.metadata.hook),
            intervention: self.intervention,
        }
    }
}

/// One steering condition: `vector` at `beta`, at `point` of each of the vector's layers,
/// at `positions`, by `intervention`.
#[derive(Debug, Clone)]
pub struct Steering<'a> {
    pub vector: &'a SteeringVector,
    pub beta: f64,
    pub positions: Positions,
    pub point: HookPoint,
    pub intervention: InterventionKind,
}

impl<'a> Steering<'a> {
    /// Add `beta * vector` at `positions` of the hook point it was read at (`resid_post`
    /// unless extracted elsewhere): CAA, RepE, L-Cross.
    pub fn add(vector: &'a SteeringVector, beta: f64, positions: Positions) -> Self {
        Self { vector, beta, positions, point: vector.metadata.hook, intervention: InterventionKind::Add }
    }

    /// The same steering at another hook point.
    pub fn at(mut self, point: HookPoint) -> Self {
        self.point = point;
        self
    }

    /// The same steering with another intervention.
    pub fn with_intervention(mut self, intervention: InterventionKind) -> Self {
        self.intervention = intervention;
        self
    }

    /// What makes this steering's numbers besides the vector's values and beta, for
    /// cache keys: the positions, and the hook point and intervention when they are not
    /// the defaults (so keys written before hook points existed stay valid).
    pub fn site_key(&self) -> String {
        let mut key = format!("{:?}", self.positions);
        if self.point != HookPoint::ResidPost || self.intervention != InterventionKind::Add {
            key.push_str(&format!(";point={};intervention={}", self.point, self.intervention));
        }
        key
    }

    /// The hooks of this steering on `model`: one intervention at each layer of the
    /// vector (also for beta 0, which then adds exact zeros).
    pub fn hooks(&self, model: &Model) -> Result<Hooks> {
        if !usable(self.beta) {
            return Err(CoreError::BadValue { what: "beta".into(), value: self.beta.to_string(), expected: "a finite number within f32's range".into() });
        }
        let n = model.config().num_layers;
        let mut hooks = Hooks::none();
        for (&layer, v) in &self.vector.layers {
            if layer >= n {
                return Err(CoreError::LayerOutOfRange { model: model.id().to_string(), layer, layers: n });
            }
            hooks = hooks.with_intervention_at(HookName::new(layer, self.point), self.intervention, model.vector_tensor(v)?, self.beta, self.positions);
        }
        Ok(hooks)
    }
}

impl fmt::Display for Steering<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layers: Vec<String> = self.vector.layers.keys().map(|l| l.to_string()).collect();
        write!(
            f,
            "{} {} x {} at {} of layer {}, positions {:?}",
            self.intervention,
            self.beta,
            self.vector.metadata.concept,
            self.point,
            layers.join(","),
            self.positions
        )
    }
}

/// The hooks of an optional steering (None: no hooks).
pub fn steering_hooks(model: &Model, steering: Option<&Steering<'_>>) -> Result<Hooks> {
    steering.map_or_else(|| Ok(Hooks::none()), |s| s.hooks(model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_names_what_is_wrong() {
        assert_eq!(Beta::parse(" auto ").unwrap(), Beta::Auto);
        assert_eq!(Beta::parse("-4").unwrap(), Beta::Value(-4.0));
        for bad in ["1e39", "nan", "inf", "x"] {
            let e = Beta::parse(bad).unwrap_err();
            assert!(matches!(&e, CoreError::BadValue { what, .. } if what == "beta"), "{bad}: {e:?}");
        }
        assert_eq!(parse_positions("from:3").unwrap(), Positions::From(3));
        assert!(matches!(parse_positions("middle"), Err(CoreError::BadValue { .. })));
        let site = Site::parse(Some("attn_out"), Some("generated"), Some("cap")).unwrap();
        assert_eq!(site, Site { point: Some(HookPoint::AttnOut), positions: Some(Positions::Generated), intervention: InterventionKind::Cap });
        assert_eq!(Site::parse(None, None, None).unwrap(), Site::default());
        assert!(Site::parse(Some("resid_mid"), None, None).unwrap_err().to_string().contains("resid_mid"));
        assert!(Site::parse(None, None, Some("scale")).unwrap_err().to_string().contains("add, ablate or cap"));
    }

    #[test]
    fn layer_ranges_are_bounded_before_they_are_expanded() {
        assert_eq!(parse_layers("3, 5-7,9").unwrap(), vec![3, 5, 6, 7, 9]);
        assert_eq!(parse_layers(&format!("0-{}", MAX_LAYERS - 1)).unwrap().len(), MAX_LAYERS);
        for bad in ["0-1000000000", "4096", "18446744073709551615", "0-18446744073709551615", "0-4095,0"] {
            let e = parse_layers(bad).unwrap_err();
            assert!(matches!(&e, CoreError::BadValue { what, .. } if what == "layers"), "{bad}: {e:?}");
        }
        for bad in ["", ",", "7-3", "-1", "1-", "a"] {
            assert!(parse_layers(bad).is_err(), "{bad}");
        }
    }
}
