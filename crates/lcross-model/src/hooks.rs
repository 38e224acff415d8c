//! Named hook points on the residual stream, in the spirit of TransformerLens.
//!
//! The one hook point is `resid_post(layer)`: the residual stream after decoder block
//! `layer` (0-based), which equals Hugging Face's `hidden_states[layer + 1]`. A
//! [`Hooks`] value says which of those points to *capture* (read) and where to
//! *intervene* (add `scale * vector`). Interventions at a layer are applied before
//! that layer's capture, so a capture sees the stream the next block sees.

use candle_core::Tensor;

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

/// Which positions a capture records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapturePositions {
    /// Only the last token of the forward call.
    Last,
    /// Every token of the forward call.
    All,
}

/// Read `resid_post(layer)`.
#[derive(Debug, Clone)]
pub struct Capture {
    pub layer: usize,
    pub positions: CapturePositions,
}

/// Add `scale * vector` to `resid_post(layer)` at `positions`.
#[derive(Debug, Clone)]
pub struct Intervention {
    pub layer: usize,
    /// Shape `(hidden_size,)`, on the model's device, in the model's dtype.
    pub vector: Tensor,
    pub scale: f64,
    pub positions: Positions,
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

    /// Capture the last token at each of `layers`.
    pub fn capture_last(layers: &[usize]) -> Self {
        Self { captures: layers.iter().map(|&layer| Capture { layer, positions: CapturePositions::Last }).collect(), ..Self::default() }
    }

    /// Add a capture.
    pub fn with_capture(mut self, layer: usize, positions: CapturePositions) -> Self {
        self.captures.push(Capture { layer, positions });
        self
    }

    /// Add an intervention.
    pub fn with_intervention(mut self, layer: usize, vector: Tensor, scale: f64, positions: Positions) -> Self {
        self.interventions.push(Intervention { layer, vector, scale, positions });
        self
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
