//! From tokens to the text a client sees: incremental detokenization (incomplete UTF-8
//! held back), end-of-turn tokens hidden, `stop` strings cut out (text that could be the
//! start of a stop string is held back while streaming), and log-probabilities in
//! OpenAI's shapes.

use std::sync::Arc;

use lcross_model::{Model, TextStream, TokenLogprob};

use crate::api::{CompletionLogprobs, TokenLogprobOut, TopLogprob};

/// What one token changed.
#[derive(Debug, Default)]
pub struct Delta {
    /// Text that can be sent now (may be empty).
    pub text: String,
    /// A stop string matched: the answer is complete.
    pub stopped: bool,
}

/// Text cut at stop strings: what may be sent now, holding back any tail that could be
/// the start of a stop string.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    /// Text so far (truncated at a stop string once one matched).
    text: String,
    /// Bytes of `text` already handed out.
    sent: usize,
    done: bool,
}

impl StopFilter {
    /// A filter for `stops` (empty strings ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), ..Self::default() }
    }

    /// Whether a stop string (or [`Self::finish`]) ended the text.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The text handed out so far.
    pub fn sent(&self) -> &str {
        &self.text[..self.sent]
    }

    /// Bytes of text before the last [`Self::push`].
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether no text arrived yet.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Add text; returns what can be sent now, and whether a stop string matched (the
    /// stop string and everything after it are dropped).
    pub fn push(&mut self, piece: &str) -> Delta {
        if self.done {
            return Delta::default();
        }
        self.text.push_str(piece);
        // Nothing that could begin a stop string was sent, so a match starts at or after
        // `sent`; search from a little before to be safe at char boundaries.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.sent.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        if let Some(cut) = self.stops.iter().filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i)).min() {
            let cut = cut.max(self.sent);
            let out = self.text[self.sent..cut].to_string();
            self.text.truncate(cut);
            self.sent = cut;
            self.done = true;
            return Delta { text: out, stopped: true };
        }
        let upto = self.text.len() - self.held_back();
        let out = self.text[self.sent..upto].to_string();
        self.sent = upto;
        Delta { text: out, stopped: false }
    }

    /// The end of the text: everything not yet sent.
    pub fn finish(&mut self) -> String {
        let out = self.text[self.sent..].to_string();
        self.sent = self.text.len();
        self.done = true;
        out
    }

    /// Length of the longest unsent suffix of the text that begins some stop string.
    fn held_back(&self) -> usize {
        let mut best = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > best && self.text.len() >= self.sent + i && self.text.ends_with(&s[..i]) {
                    best = i;
                }
            }
        }
        best
    }
}

/// The visible answer of one request, built token by token.
pub struct Transcript {
    model: Arc<Model>,
    stream: TextStream,
    filter: StopFilter,
    /// Tokens produced, end-of-turn tokens included (usage).
    pub produced: usize,
    /// Visible tokens with their log-probabilities, when asked for.
    pub logprobs: Vec<TokenLogprob>,
}

impl Transcript {
    /// A transcript cut at any of `stops` (empty strings ignored).
    pub fn new(model: Arc<Model>, stops: Vec<String>) -> Self {
        Self { model, stream: TextStream::new(), filter: StopFilter::new(stops), produced: 0, logprobs: Vec::new() }
    }

    /// Whether a stop string ended the answer.
    pub fn is_done(&self) -> bool {
        self.filter.is_done()
    }

    /// The text handed out so far (all of it after [`Self::finish`] or a stop string).
    pub fn text(&self) -> &str {
        self.filter.sent()
    }

    /// Add a token. End-of-turn tokens count in `produced` but add no text.
    pub fn push(&mut self, id: u32, logprob: Option<TokenLogprob>) -> lcross_model::Result<Delta> {
        self.produced += 1;
        if self.filter.is_done() || self.model.stop_tokens().contains(&id) {
            return Ok(Delta::default());
        }
        let had_logprob = logprob.is_some();
        if let Some(lp) = logprob {
            self.logprobs.push(lp);
        }
        let len_before = self.filter.len();
        let tk = self.model.tokenizer();
        let piece = self.stream.push(id, |ids| tk.decode(ids, true))?.unwrap_or_default();
        let delta = self.filter.push(&piece);
        if delta.stopped && had_logprob && self.filter.len() <= len_before {
            // The stop string began before this token's text: the token shows nothing.
            self.logprobs.pop();
        }
        Ok(delta)
    }

    /// The text not yet sent, at the end of the answer.
    pub fn finish(&mut self) -> String {
        self.filter.finish()
    }

    /// A token's text as the client sees it (lossy for a token that is part of a
    /// multi-byte character) and its bytes.
    fn token_text(&self, id: u32) -> (String, Vec<u8>) {
        let text = self.model.tokenizer().decode(&[id], false).unwrap_or_default();
        let bytes = text.as_bytes().to_vec();
        (text, bytes)
    }

    /// Chat-format entries of the log-probabilities from index `from`.
    pub fn chat_logprobs(&self, from: usize) -> Vec<TokenLogprobOut> {
        self.logprobs[from.min(self.logprobs.len())..]
            .iter()
            .map(|lp| {
                let (token, bytes) = self.token_text(lp.token);
                let top = lp
                    .top
                    .iter()
                    .map(|&(t, l)| {
                        let (token, bytes) = self.token_text(t);
                        TopLogprob { token, logprob: l, bytes }
                    })
                    .collect();
                TokenLogprobOut { token, logprob: lp.logprob, bytes, top_logprobs: top }
            })
            .collect()
    }

    /// Completions-format log-probabilities from index `from`; offsets count from
    /// `offset` (bytes of text sent before).
    pub fn completion_logprobs(&self, from: usize, mut offset: usize) -> CompletionLogprobs {
        let mut out = CompletionLogprobs::default();
        for lp in &self.logprobs[from.min(self.logprobs.len())..] {
            let (token, _) = self.token_text(lp.token);
            out.text_offset.push(offset);
            offset += token.len();
            out.tokens.push(token);
            out.token_logprobs.push(lp.logprob);
            let mut top = serde_json::Map::new();
            for &(t, l) in &lp.top {
                let (tt, _) = self.token_text(t);
                // Two ids may decode alike; keep the likelier (the first, as top is sorted).
                top.entry(tt).or_insert(serde_json::json!(l));
            }
            out.top_logprobs.push(top);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut f = StopFilter::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        for p in pieces {
            let d = f.push(p);
            out.push(d.text);
            if d.stopped {
                return (out, true, f.sent().to_string());
            }
        }
        out.push(f.finish());
        (out, false, f.sent().to_string())
    }

    #[test]
    fn no_stops_passes_text_through() {
        assert_eq!(run(&[], &["a", "b"]), (vec!["a".into(), "b".into(), "".into()], false, "ab".into()));
    }

    #[test]
    fn stop_string_split_over_pieces_is_held_back_and_cut() {
        let (out, stopped, text) = run(&["END"], &["hello E", "N", "D more"]);
        assert!(stopped);
        assert_eq!(text, "hello ");
        assert_eq!(out, vec!["hello ".to_string(), "".into(), "".into()]);
    }

    #[test]
    fn a_false_start_is_released() {
        let (out, stopped, text) = run(&["END"], &["x E", "NX", " y"]);
        assert!(!stopped);
        assert_eq!(text, "x ENX y");
        assert_eq!(out.concat(), "x ENX y");
        assert_eq!(out[0], "x ");
    }

    #[test]
    fn earliest_of_several_stops_wins_and_multibyte_is_safe() {
        let (_, stopped, text) = run(&["\n\n", "é!"], &["café", "! ok\n\n"]);
        assert!(stopped);
        assert_eq!(text, "caf");
        let (_, stopped, text) = run(&["ü"], &["aüb"]);
        assert!(stopped);
        assert_eq!(text, "a");
    }

    #[test]
    fn a_short_text_against_a_long_stop() {
        let (out, stopped, text) = run(&["STOP HERE"], &["S", "T", "x"]);
        assert!(!stopped);
        assert_eq!((out.concat(), text), ("STx".to_string(), "STx".to_string()));
    }

    #[test]
    fn nothing_after_done() {
        let mut f = StopFilter::new(vec!["x".into()]);
        assert!(f.push("ax").stopped);
        assert_eq!(f.push("more").text, "");
        assert_eq!(f.sent(), "a");
    }
}
