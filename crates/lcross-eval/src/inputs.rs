//! Input files of the evaluation commands: prompt lists and (question, answer) pairs.

use std::path::Path;

use serde_json::Value;

use crate::error::{EvalError, Result};

/// Questions of a file: a CAA `test_dataset_open_ended.json` (a JSON array of objects
/// with a "question"), else prompts as [`read_prompts`] reads them.
pub fn read_questions(path: &Path) -> Result<Vec<String>> {
    let text = lcross_core::data::read_text(path)?;
    let looks_caa = text.trim_start().starts_with('[') && text.contains("\"question\"");
    if looks_caa {
        Ok(lcross_core::dataset::load_open_ended(path)?)
    } else {
        read_prompts(path, "prompt")
    }
}

/// Prompts of a file: plain lines, or JSONL objects with a string `field` (`prompt`).
/// A JSON array of strings is read too. Blank lines are skipped; a malformed line is an
/// error naming the file and line.
pub fn read_prompts(path: &Path, field: &str) -> Result<Vec<String>> {
    let text = lcross_core::data::read_text(path)?;
    if text.trim_start().starts_with('[') {
        let v: Vec<Value> = serde_json::from_str(&text).map_err(|e| EvalError::parse(path, None, format!("not a JSON array: {e}")))?;
        let out = v
            .into_iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) if !s.trim().is_empty() => Ok(s),
                Value::Object(o) => match o.get(field) {
                    Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                    _ => Err(EvalError::parse(path, None, format!("item {i}: no non-empty string `{field}`"))),
                },
                _ => Err(EvalError::parse(path, None, format!("item {i}: not a non-empty string"))),
            })
            .collect::<Result<Vec<_>>>()?;
        if out.is_empty() {
            return Err(EvalError::parse(path, None, "no prompts in the file"));
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if line.trim_start().starts_with('{') {
            let v: Value = serde_json::from_str(line).map_err(|e| EvalError::parse(path, Some(i + 1), format!("not valid JSON: {e}")))?;
            match v.get(field) {
                Some(Value::String(p)) if !p.is_empty() => out.push(p.clone()),
                Some(Value::String(_)) => return Err(EvalError::parse(path, Some(i + 1), format!("field \"{field}\" is empty"))),
                Some(_) => return Err(EvalError::parse(path, Some(i + 1), format!("field \"{field}\" must be a string"))),
                None => return Err(EvalError::parse(path, Some(i + 1), format!("JSON line without a \"{field}\" field"))),
            }
        } else {
            out.push(line.to_string());
        }
    }
    if out.is_empty() {
        return Err(EvalError::parse(path, None, "no prompts in the file"));
    }
    Ok(out)
}

/// One (question, answer) to judge, with its concept and a reference label if the file
/// gives them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QuestionAnswer {
    pub question: String,
    pub answer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concept: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<f64>,
}

/// JSONL lines `{"question": ..., "answer": ...}` with optional `concept` (string) and
/// `label` (number) fields (others ignored), in file order.
pub fn read_question_answers(path: &Path) -> Result<Vec<QuestionAnswer>> {
    let text = lcross_core::data::read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| EvalError::parse(path, Some(i + 1), format!("not valid JSON: {e}")))?;
        let field = |name: &str| match v.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(EvalError::parse(path, Some(i + 1), format!("field \"{name}\" must be a string"))),
            None => Err(EvalError::parse(path, Some(i + 1), format!("missing field \"{name}\""))),
        };
        let concept = match v.get("concept") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(EvalError::parse(path, Some(i + 1), "field \"concept\" must be a string")),
        };
        let label = match v.get("label") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(_) => return Err(EvalError::parse(path, Some(i + 1), "field \"label\" must be a number")),
        };
        out.push(QuestionAnswer { question: field("question")?, answer: field("answer")?, concept, label });
    }
    if out.is_empty() {
        return Err(EvalError::parse(path, None, "no (question, answer) lines"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_and_pairs_with_clear_errors() {
        let dir = std::env::temp_dir().join(format!("lcross-eval-inputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("p.txt");
        std::fs::write(&p, "first\n\n{\"prompt\": \"second\"}\n").unwrap();
        assert_eq!(read_prompts(&p, "prompt").unwrap(), vec!["first", "second"]);
        std::fs::write(&p, "[\"a\", {\"prompt\": \"b\"}]").unwrap();
        assert_eq!(read_prompts(&p, "prompt").unwrap(), vec!["a", "b"]);
        std::fs::write(&p, "ok\n{\"text\": 1}\n").unwrap();
        let e = read_prompts(&p, "prompt").unwrap_err().to_string();
        assert!(e.contains("p.txt, line 2") && e.contains("\"prompt\""), "{e}");
        let q = dir.join("qa.jsonl");
        std::fs::write(&q, "{\"question\": \"q\", \"answer\": \"a\", \"label\": 3}\n{\"question\": \"q2\"}\n").unwrap();
        let e = read_question_answers(&q).unwrap_err().to_string();
        assert!(e.contains("qa.jsonl, line 2") && e.contains("missing field \"answer\""), "{e}");
        std::fs::write(&q, "{\"question\": \"q\", \"answer\": \"a\"}\n").unwrap();
        assert_eq!(read_question_answers(&q).unwrap()[0].answer, "a");
    }
}
