//! Named hook points of the residual stream, with TransformerLens's names.
//!
//! Each block `L` (0-based) has four points, in the order the stream passes them:
//! `resid_pre(L)` (the stream entering the block; Hugging Face's `hidden_states[L]`),
//! `attn_out(L)` (what the attention branch adds to the stream, after any post-attention
//! norm), `mlp_out(L)` (what the MLP branch adds, after any post-feed-forward norm) and
//! `resid_post(L)` (the stream leaving the block; `hidden_states[L + 1]`), so that
//! `resid_pre(L) + attn_out(L) + mlp_out(L) = resid_post(L)`. A [`Hooks`] value says
//! which points to *capture* (read) and where to *intervene* (add a vector, ablate a
//! direction or cap the projection on it). At one point, interventions apply before
//! captures, so a capture sees what flows on.
use std::fmt;

use candle_core::Tensor;

/// A point inside a block, with TransformerLens's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPoint {
    /// The residual stream entering the block.
    ResidPre,
    /// The attention branch's output, as added to the stream (after any post-attention norm).
    AttnOut,
    /// The MLP branch's output, as added to the stream (after any post-feed-forward norm).
    MlpOut,
    /// The residual stream leaving the block (the default everywhere).
    #[default]
    ResidPost,
}

impl HookPoint {
    /// The four points in stream order.
    pub const ALL: [HookPoint; 4] = [HookPoint::ResidPre, HookPoint::AttnOut, HookPoint::MlpOut, HookPoint::ResidPost];

    /// The name: `resid_pre`, `attn_out`, `mlp_out` or `resid_post`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HookPoint::ResidPre => "resid_pre",
            HookPoint::AttnOut => "attn_out",
            HookPoint::MlpOut => "mlp_out",
            HookPoint::ResidPost => "resid_post",
        }
    }

    /// Parse a name (TransformerLens's `hook_` prefix is accepted).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_prefix("hook_").unwrap_or(s);
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for HookPoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| format!("unknown hook point `{s}` (expected resid_pre, attn_out, mlp_out or resid_post)"))
    }
}

/// A hook point of one block: `blocks.{layer}.hook_{point}` in TransformerLens's naming.
/// Ordered as the stream passes them (by layer, then point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HookName {
    pub layer: usize,
    pub point: HookPoint,
}

impl HookName {
    /// `point` of block `layer`.
    pub fn new(layer: usize, point: HookPoint) -> Self {
        Self { layer, point }
    }
    /// `resid_post(layer)`.
    pub fn resid_post(layer: usize) -> Self {
        Self::new(layer, HookPoint::ResidPost)
    }
}

impl fmt::Display for HookName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blocks.{}.hook_{}", self.layer, self.point)
    }
}

/// What an intervention does with its vector `v` (unit direction `u = v / |v|`) to the
/// state `h` at each touched position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterventionKind {
    /// `h + scale * v` (activation addition: CAA, RepE, L-Cross).
    #[default]
    Add,
    /// `h - (h . u) u`: the direction projected out (directional ablation, Arditi et al.
    /// 2024); the scale is not used.
    Ablate,
    /// `h - max(0, h . u - scale) u`: the projection on `u` clamped to at most `scale`.
    Cap,
}

impl InterventionKind {
    /// The three kinds.
    pub const ALL: [InterventionKind; 3] = [InterventionKind::Add, InterventionKind::Ablate, InterventionKind::Cap];

    /// The name: `add`, `ablate` or `cap`.
    pub fn as_str(&self) -> &'static str {
        match self {
            InterventionKind::Add => "add",
            InterventionKind::Ablate => "ablate",
            InterventionKind::Cap => "cap",
        }
    }

    /// Parse a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s.trim())
    }
}

impl fmt::Display for InterventionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for InterventionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| format!("unknown intervention `{s}` (expected add, ablate or cap)"))
    }
}

/// Which token positions an intervention touches.
///
/// Positions are absolute indices in the sequence (0 = first token), so an
/// intervention means the same thing whether the sequence is run in one forward pass
/// or token by token with a KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// Every position, prompt and generated (CAA).
    All,
    /// Only the last prompt token.
    PromptLast,
    /// Only generated tokens (positions at or after the prompt length).
    Generated,
    /// The last prompt token and every generated token (RepE).
    PromptLastAndGenerated,
    /// Every position at or after this index.
    From(usize),
}

impl Positions {
    /// Whether absolute position `pos` is touched, given the prompt length.
    pub fn contains(&self, pos: usize, prompt_len: usize) -> bool {
        match *self {
            Positions::All => true,
            Positions::PromptLast => pos + 1 == prompt_len,
            Positions::Generated => pos >= prompt_len,
            Positions::PromptLastAndGenerated => pos + 1 >= prompt_len,
            Positions::From(i) => pos >= i,
        }
    }

    /// Parse `all`, `prompt-last`, `generated`, `prompt-last+generated`, `from:N`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(Self::All),
            "prompt-last" | "last" => Some(Self::PromptLast),
            "generated" => Some(Self::Generated),
            "prompt-last+generated" | "repe" => Some(Self::PromptLastAndGenerated),
            _ => s.strip_prefix("from:").and_then(|n| n.parse().ok()).map(Self::From),
        }
    }
}

impl fmt::Display for Positions {
    /// The name [`Positions::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Positions::All => f.write_str("all"),
            Positions::PromptLast => f.write_str("prompt-last"),
            Positions::Generated => f.write_str("generated"),
            Positions::PromptLastAndGenerated => f.write_str("prompt-last+generated"),
            Positions::From(i) => write!(f, "from:{i}"),
        }
    }
}

/// Which positions a capture records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapturePositions {
    /// Only the last token of the forward call.
    Last,
    /// Every token of the forward call.
    All,
}

/// Read `point` of block `layer`.
#[derive(Debug, Clone)]
pub struct Capture {
    pub layer: usize,
    pub point: HookPoint,
    pub positions: CapturePositions,
}

impl Capture {
    /// Its hook name.
    pub fn name(&self) -> HookName {
        HookName::new(self.layer, self.point)
    }
}

/// Change `point` of block `layer` at `positions` with `vector` (see [`InterventionKind`]).
#[derive(Debug, Clone)]
pub struct Intervention {
    pub layer: usize,
    pub point: HookPoint,
    /// Shape `(hidden_size,)`, on the model's device, in the model's dtype.
    pub vector: Tensor,
    pub scale: f64,
    pub positions: Positions,
    pub kind: InterventionKind,
}

impl Intervention {
    /// Its hook name.
    pub fn name(&self) -> HookName {
        HookName::new(self.layer, self.point)
    }
}

/// The captures and interventions of one forward pass or one generation.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub captures: Vec<Capture>,
    pub interventions: Vec<Intervention>,
    /// Length of the prompt, for [`Positions::PromptLast`] and [`Positions::Generated`].
    /// `None`: every token given to a forward pass is prompt.
    pub prompt_len: Option<usize>,
}

impl Hooks {
    /// No captures, no interventions.
    pub fn none() -> Self {
        Self::default()
    }

    /// Capture `resid_post` at the last token of each of `layers`.
    pub fn capture_last(layers: &[usize]) -> Self {
        Self::capture_last_at(layers, HookPoint::ResidPost)
    }

    /// Capture `point` at the last token of each of `layers`.
    pub fn capture_last_at(layers: &[usize], point: HookPoint) -> Self {
        Self { captures: layers.iter().map(|&layer| Capture { layer, point, positions: CapturePositions::Last }).collect(), ..Self::default() }
    }

    /// Add a capture of `resid_post(layer)`.
    pub fn with_capture(self, layer: usize, positions: CapturePositions) -> Self {
        self.with_capture_at(HookName::resid_post(layer), positions)
    }

    /// Add a capture of any hook point.
    pub fn with_capture_at(mut self, name: HookName, positions: CapturePositions) -> Self {
        self.captures.push(Capture { layer: name.layer, point: name.point, positions });
        self
    }

    /// Add `scale * vector` to `resid_post(layer)` at `positions`.
    pub fn with_intervention(self, layer: usize, vector: Tensor, scale: f64, positions: Positions) -> Self {
        self.with_intervention_at(HookName::resid_post(layer), InterventionKind::Add, vector, scale, positions)
    }

    /// Add an intervention of any kind at any hook point.
    pub fn with_intervention_at(mut self, name: HookName, kind: InterventionKind, vector: Tensor, scale: f64, positions: Positions) -> Self {
        self.interventions.push(Intervention { layer: name.layer, point: name.point, vector, scale, positions, kind });
        self
    }

    /// The interventions in words, for error messages: "no steering", or each one's hook,
    /// kind, scale and vector norm ("add at resid_post of layer 12, scale 4, |v| = 11.2").
    pub fn describe_steering(&self) -> String {
        if self.interventions.is_empty() {
            return "no steering".into();
        }
        let parts: Vec<String> = self
            .interventions
            .iter()
            .map(|iv| {
                let norm = iv.vector.to_dtype(candle_core::DType::F32).and_then(|v| v.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()).unwrap_or(f32::NAN);
                let scale = if iv.scale != 0.0 && !(1e-3..1e6).contains(&iv.scale.abs()) { format!("{:e}", iv.scale) } else { iv.scale.to_string() };
                format!("{} at {} of layer {}, scale {scale}, |v| = {norm:.3}", iv.kind.as_str(), iv.point.as_str(), iv.layer)
            })
            .collect();
        format!("steering {}", parts.join("; "))
    }

    /// Whether anything hooks `name`.
    pub fn touches(&self, name: HookName) -> bool {
        self.captures.iter().any(|c| c.name() == name) || self.interventions.iter().any(|i| i.name() == name)
    }

    /// Deepest layer any capture reads, if any.
    pub fn deepest_capture(&self) -> Option<usize> {
        self.captures.iter().map(|c| c.layer).max()
    }

    /// Deepest layer any hook touches.
    pub fn deepest_layer(&self) -> Option<usize> {
        self.captures.iter().map(|c| c.layer).chain(self.interventions.iter().map(|i| i.layer)).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_as_transformer_lens_does() {
        for p in HookPoint::ALL {
            assert_eq!(HookPoint::parse(p.as_str()), Some(p));
            assert_eq!(HookPoint::parse(&format!("hook_{p}")), Some(p));
        }
        assert_eq!(HookPoint::parse("resid_mid"), None);
        assert!("nope".parse::<HookPoint>().unwrap_err().contains("resid_pre"));
        assert_eq!(HookName::new(3, HookPoint::AttnOut).to_string(), "blocks.3.hook_attn_out");
        assert!(HookName::new(2, HookPoint::ResidPost) < HookName::new(3, HookPoint::ResidPre));
        assert!(HookName::new(3, HookPoint::ResidPre) < HookName::new(3, HookPoint::AttnOut));
        for k in InterventionKind::ALL {
            assert_eq!(k.as_str().parse::<InterventionKind>(), Ok(k));
        }
        assert!(InterventionKind::parse("scale").is_none());
    }
}
