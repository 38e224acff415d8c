//! Tokenizers built from a GGUF file's metadata or a Hugging Face `tokenizer.json`.
//!
//! A GGUF file carries no `tokenizer.json`: it stores the vocabulary, the merges, the
//! token types and the name of the pre-tokenizer. We assemble the same pipeline that
//! Hugging Face transformers builds for that file (its `integrations/gguf` tokenizer
//! builders), with the `tokenizers` crate, so that token ids are identical:
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE; the split regex chosen by
//!   `tokenizer.ggml.pre` (qwen2, llama3-family), or GPT-2's own byte-level regex
//!   for other names (smollm, gpt2, default).
//! - `tokenizer.ggml.model = "llama"` (sentencepiece): BPE with byte fallback, spaces
//!   written as `▁`. Gemma files list no merges; they are rebuilt from the vocabulary in
//!   file order, as transformers does.
//!
//! Control tokens (type 3) become special added tokens, user-defined tokens (type 4)
//! plain added tokens, so both stay whole when written in text.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::quantized::gguf_file;
use serde_json::json;
use tokenizers::models::bpe::BPE;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper};

use crate::error::{ModelError, Result};
use crate::gguf::{meta_bool, meta_string, meta_string_array, meta_u32};

/// GGUF token type of a control token (`<|im_end|>`, `<bos>`...).
const TOKEN_TYPE_CONTROL: u32 = 3;
/// GGUF token type of a user-defined added token.
const TOKEN_TYPE_USER_DEFINED: u32 = 4;

/// Qwen2's split regex (transformers `models/qwen2/tokenization_qwen2.py`).
const SPLIT_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama-3's split regex (three-digit groups).
const SPLIT_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer plus the special-token facts generation needs.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// Beginning-of-sequence token, if the model has one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token named by the model.
    pub eos_token_id: Option<u32>,
    /// Whether plain-text encoding prepends BOS.
    pub add_bos: bool,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_id", &self.eos_token_id)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Token ids of `text`. With `add_special_tokens`, the model's default special tokens
    /// (BOS where the model adds one) are added, like transformers' `tokenizer(text)`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, add_special_tokens).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; special tokens kept unless `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(tok_err)
    }

    /// Id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Size of the vocabulary including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Build from a Hugging Face `tokenizer.json` (+ facts from `tokenizer_config.json`).
    pub fn from_tokenizer_json(path: &Path, bos: Option<u32>, eos: Option<u32>, add_bos: bool) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self { inner, bos_token_id: bos, eos_token_id: eos, add_bos })
    }

    /// Build from the metadata of a GGUF file.
    pub fn from_gguf(path: &Path, content: &gguf_file::Content) -> Result<Self> {
        let md = &content.metadata;
        let kind = meta_string(path, md, "tokenizer.ggml.model")?;
        let tokens = meta_string_array(path, md, "tokenizer.ggml.tokens")?;
        if tokens.is_empty() {
            return Err(ModelError::field(path, "tokenizer.ggml.tokens", "empty vocabulary"));
        }
        let token_types: Vec<u32> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => {
                let arr = v.to_vec().map_err(|_| ModelError::field(path, "tokenizer.ggml.token_type", "not an array"))?;
                arr.iter()
                    .map(|x| value_u32(x).ok_or_else(|| ModelError::field(path, "tokenizer.ggml.token_type", "non-integer element")))
                    .collect::<Result<_>>()?
            }
            None => vec![],
        };
        let architecture = meta_string(path, md, "general.architecture")?;
        let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        let opt_id = |key: &str| -> Result<Option<u32>> {
            match md.get(key) {
                None => Ok(None),
                Some(_) => {
                    let id = meta_u32(path, md, key)?;
                    if (id as usize) < tokens.len() {
                        Ok(Some(id))
                    } else {
                        Err(ModelError::field(path, key, format!("token id {id} is outside the vocabulary of {}", tokens.len())))
                    }
                }
            }
        };
        let bos = opt_id("tokenizer.ggml.bos_token_id")?;
        let eos = opt_id("tokenizer.ggml.eos_token_id")?;
        let unk = opt_id("tokenizer.ggml.unknown_token_id")?;
        let add_bos_meta = if md.contains_key("tokenizer.ggml.add_bos_token") { Some(meta_bool(path, md, "tokenizer.ggml.add_bos_token")?) } else { None };

        let (mut inner, add_bos) = match kind.as_str() {
            "gpt2" => (byte_level_bpe(path, md, &tokens, &pre)?, add_bos_meta.unwrap_or(false)),
            "llama" => {
                let gemma = architecture.starts_with("gemma");
                (sentencepiece_bpe(path, md, &tokens, unk, gemma)?, add_bos_meta.unwrap_or(true))
            }
            other => return Err(ModelError::field(path, "tokenizer.ggml.model", format!("unsupported tokenizer model `{other}` (supported: gpt2, llama)"))),
        };

        // Control tokens stay whole and are special; user-defined ones stay whole.
        let byte_level = kind == "gpt2";
        let alphabet: HashSet<char> = byte_to_unicode().into_iter().collect();
        let mut control = Vec::new();
        let mut user = Vec::new();
        for (i, ty) in token_types.iter().enumerate() {
            let Some(tok) = tokens.get(i) else { break };
            if *ty == TOKEN_TYPE_CONTROL && (!byte_level || tok.chars().all(|c| alphabet.contains(&c))) {
                control.push(AddedToken::from(tok.clone(), true).normalized(false));
            } else if *ty == TOKEN_TYPE_USER_DEFINED && inner.token_to_id(tok).is_some() {
                // Only tokens the vocabulary spells this way (gemma's respelled space runs are not).
                user.push(AddedToken::from(tok.clone(), false).normalized(false));
            }
        }
        inner.add_special_tokens(&control);
        inner.add_tokens(&user);

        // BOS (and nothing else) is added by the post-processor when the model asks for it.
        let bos_tok = bos.map(|b| tokens[b as usize].clone());
        let single: Vec<String> = if add_bos { bos_tok.iter().cloned().chain(["$A".to_string()]).collect() } else { vec!["$A".into()] };
        let pair: Vec<String> = if add_bos {
            let b = bos_tok.clone().unwrap_or_default();
            vec![b.clone(), "$A".into(), format!("{b}:1"), "$B:1".into()]
        } else {
            vec!["$A".into(), "$B:1".into()]
        };
        let mut builder = tokenizers::processors::template::TemplateProcessing::builder();
        builder.try_single(single).map_err(tok_err)?.try_pair(pair).map_err(tok_err)?;
        if let (true, Some(b), Some(id)) = (add_bos, bos_tok.as_ref(), bos) {
            builder.special_tokens(vec![(b.clone(), id)]);
        }
        let add_bos = add_bos && bos.is_some();
        let pp: PostProcessorWrapper = builder.build().map_err(tok_err)?.into();
        inner.with_post_processor(Some(pp));
        Ok(Self { inner, bos_token_id: bos, eos_token_id: eos, add_bos })
    }
}

fn value_u32(v: &gguf_file::Value) -> Option<u32> {
    use gguf_file::Value::*;
    match v {
        U8(x) => Some(*x as u32),
        I8(x) => u32::try_from(*x).ok(),
        U16(x) => Some(*x as u32),
        I16(x) => u32::try_from(*x).ok(),
        U32(x) => Some(*x),
        I32(x) => u32::try_from(*x).ok(),
        U64(x) => u32::try_from(*x).ok(),
        I64(x) => u32::try_from(*x).ok(),
        _ => None,
    }
}

/// GPT-2's reversible byte -> printable-char table (`bytes_to_unicode`).
pub(crate) fn byte_to_unicode() -> Vec<char> {
    let mut table = vec!['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
            c
        };
    }
    table
}

fn component<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(tok_err)
}

fn byte_level_bpe(path: &Path, md: &HashMap<String, gguf_file::Value>, tokens: &[String], pre: &str) -> Result<tokenizers::Tokenizer> {
    let table = byte_to_unicode();
    let alphabet: HashSet<char> = table.iter().copied().collect();
    let mut vocab: HashMap<String, u32> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let spelled = if t.chars().all(|c| alphabet.contains(&c)) { t.clone() } else { t.bytes().map(|b| table[b as usize]).collect() };
        vocab.insert(spelled, i as u32);
    }
    let merges_raw = meta_string_array(path, md, "tokenizer.ggml.merges")?;
    let mut merges = Vec::with_capacity(merges_raw.len());
    for (i, m) in merges_raw.iter().enumerate() {
        let (a, b) = m
            .split_once(' ')
            .ok_or_else(|| ModelError::field(path, "tokenizer.ggml.merges", format!("entry {i} `{m}` is not two tokens separated by a space")))?;
        merges.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<tokenizers::models::bpe::Vocab>(), merges)
        .build()
        .map_err(|e| ModelError::field(path, "tokenizer.ggml.merges", e.to_string()))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let split = match pre {
        "qwen2" | "deepseek-r1-qwen" => Some(SPLIT_QWEN2),
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" | "falcon3" | "dbrx" | "lfm2" | "pixtral" => Some(SPLIT_LLAMA3),
        _ => None,
    };
    let pre_tok: PreTokenizerWrapper = match split {
        Some(re) => component(json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]}))?,
        None => component(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}))?,
    };
    tk.with_pre_tokenizer(Some(pre_tok));
    let dec: DecoderWrapper = component(json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}))?;
    tk.with_decoder(Some(dec));
    Ok(tk)
}

/// Merges implied by a vocabulary, ordered by `rank` (lower first), as transformers'
/// `generate_merges` with scores does: every split of a token into two vocabulary
/// tokens, ties broken by longer left then longer right piece (in characters).
fn merges_from_vocab(tokens: &[String], vocab: &HashMap<String, u32>) -> Vec<(String, String)> {
    let mut merges: Vec<(usize, usize, usize, u32, u32, &str, &str)> = Vec::new();
    for (rank, tok) in tokens.iter().enumerate() {
        let mut local = Vec::new();
        let bounds: Vec<usize> = tok.char_indices().map(|(i, _)| i).skip(1).collect();
        for &i in &bounds {
            let (l, r) = tok.split_at(i);
            if let (Some(&il), Some(&ir)) = (vocab.get(l), vocab.get(r)) {
                local.push((rank, l.chars().count(), r.chars().count(), il, ir, l, r));
            }
        }
        local.sort_by_key(|x| (x.3, x.4));
        merges.extend(local);
    }
    // Python: sorted(key=(score, len_l, len_r), reverse=True) with score = -rank, stable.
    merges.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
    merges.into_iter().map(|m| (m.5.to_string(), m.6.to_string())).collect()
}

fn sentencepiece_bpe(path: &Path, md: &HashMap<String, gguf_file::Value>, tokens: &[String], unk: Option<u32>, gemma: bool) -> Result<tokenizers::Tokenizer> {
    // Gemma stores runs of spaces as real spaces; the tokenizer looks them up as `▁`s.
    let tokens: Vec<String> =
        tokens.iter().map(|t| if gemma && t.contains(' ') && t.trim().is_empty() { "\u{2581}".repeat(t.chars().count()) } else { t.clone() }).collect();
    let mut vocab: HashMap<String, u32> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        // Later duplicates win, as in the reference's dict comprehension.
        vocab.insert(t.clone(), i as u32);
    }
    let merges = if md.contains_key("tokenizer.ggml.merges") && !gemma {
        meta_string_array(path, md, "tokenizer.ggml.merges")?.iter().filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string()))).collect()
    } else {
        merges_from_vocab(&tokens, &vocab)
    };
    let mut builder = BPE::builder().vocab_and_merges(vocab.into_iter().collect::<tokenizers::models::bpe::Vocab>(), merges).byte_fallback(true).fuse_unk(true);
    if let Some(u) = unk {
        builder = builder.unk_token(tokens[u as usize].clone());
    }
    let bpe = builder.build().map_err(|e| ModelError::field(path, "tokenizer.ggml.tokens", e.to_string()))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let norm: NormalizerWrapper = component(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}))?;
    tk.with_normalizer(Some(norm));
    let pre: PreTokenizerWrapper = component(json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}))?;
    tk.with_pre_tokenizer(Some(pre));
    let dec: DecoderWrapper = component(json!({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"}
    ]}))?;
    tk.with_decoder(Some(dec));
    Ok(tk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_onto_printables() {
        let t = byte_to_unicode();
        let set: HashSet<char> = t.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[b' ' as usize], '\u{120}');
        assert_eq!(t[b'\n' as usize], '\u{10a}');
    }

    #[test]
    fn merges_follow_vocabulary_order_then_longer_left_piece() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "abc", "bc"].iter().map(|s| s.to_string()).collect();
        let vocab: HashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let m = merges_from_vocab(&tokens, &vocab);
        let m: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(m, vec![("a", "b"), ("ab", "c"), ("a", "bc"), ("b", "c")]);
    }
}
