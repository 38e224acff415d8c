//! How a dataset item becomes token ids for a given model (the text conventions).
//!
//! A/B pairs (CAA): the question rendered by the chat template as one user message with
//! the generation prompt, followed by `(` and the answer letter; the negative text is the
//! same with the other letter. Models without a chat template: the question, a blank
//! line, then `Answer: (` and the letter. The representation is the last token's
//! `resid_post`. The two texts share everything but the last token(s), so activations
//! are computed on the shared prefix once.
//!
//! Prompt pairs (RepE): each prompt rendered as one user message with the generation
//! prompt; the representation is the last token of the rendered prompt.

use lcross_model::Model;

use crate::dataset::ContrastPair;
use crate::error::{CoreError, Result};

/// The A/B prompt up to and including the opening parenthesis of the answer.
pub fn ab_prompt(model: &Model, question: &str) -> Result<String> {
    Ok(if model.chat_template().has_template() {
        format!("{}(", model.chat_template().render_user(question, None)?)
    } else {
        format!("{question}\n\nAnswer: (")
    })
}

/// Token ids of a rendered text: chat renders carry their own special tokens; plain
/// texts get the model's default ones (BOS where it adds one).
fn ids_of(model: &Model, text: &str) -> Result<Vec<u32>> {
    let ids = model.tokenizer().encode(text, !model.chat_template().has_template())?;
    if ids.is_empty() {
        return Err(CoreError::Empty { what: "tokens in a rendered text".into() });
    }
    Ok(ids)
}

/// Token ids of the A/B prompt followed by `letter`.
pub fn ab_ids(model: &Model, question: &str, letter: char) -> Result<Vec<u32>> {
    ids_of(model, &format!("{}{letter}", ab_prompt(model, question)?))
}

/// Token ids of the positive and negative texts of a pair.
pub fn pair_ids(model: &Model, pair: &ContrastPair) -> Result<(Vec<u32>, Vec<u32>)> {
    match pair {
        ContrastPair::AbQuestion { question, positive_letter, negative_letter } => {
            Ok((ab_ids(model, question, *positive_letter)?, ab_ids(model, question, *negative_letter)?))
        }
        ContrastPair::Prompts { positive, negative } => Ok((model.prompt(positive, true, None)?.ids, model.prompt(negative, true, None)?.ids)),
        ContrastPair::RawTexts { positive, negative } => Ok((model.prompt(positive, false, None)?.ids, model.prompt(negative, false, None)?.ids)),
    }
}

/// For an A/B question: the shared prefix ids and the token that starts each answer
/// letter right after it (handles tokenizers that merge `(A` into one token).
pub fn ab_choice_tokens(model: &Model, question: &str, first: char, second: char) -> Result<(Vec<u32>, u32, u32)> {
    let a = ab_ids(model, question, first)?;
    let b = ab_ids(model, question, second)?;
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == 0 || common >= a.len() || common >= b.len() {
        return Err(CoreError::BadValue {
            what: format!("answer letters {first}/{second} of an A/B question"),
            value: model.id().into(),
            expected: "a tokenizer that gives the two letters distinct tokens after a shared prefix".into(),
        });
    }
    Ok((a[..common].to_vec(), a[common], b[common]))
}

/// Length of the common prefix of two id sequences.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
