//! Chat templates rendered with minijinja the way transformers' `apply_chat_template` does.
//!
//! transformers renders with Jinja2 (`trim_blocks`, `lstrip_blocks`), exposes the special
//! tokens by name, `raise_exception` and `strftime_now`, and Python string methods
//! (`.strip()`, `.startswith()`...), which minijinja-contrib's pycompat provides.
//!
//! Models without a template (base models such as gemma3-270m) use lcross's documented
//! plain format: the system message and a blank line if there is one, then the user
//! message and a blank line: `"{system}\n\n{user}\n\n"`.

use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde::Serialize;

use crate::error::{ModelError, Result};

/// One chat message.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// A model's chat template, or the plain fallback.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: Option<String>,
    bos_token: String,
    eos_token: String,
}

fn raise_exception(msg: String) -> std::result::Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(format: String) -> String {
    // Templates use it for "today's date" in system prompts. Use a fixed, documented
    // date so renders are reproducible (transformers uses the wall clock).
    let _ = format;
    "26 Jul 2024".to_string()
}

impl ChatTemplate {
    /// A template from its Jinja source (None: the plain format), with the model's BOS/EOS strings.
    pub fn new(source: Option<String>, bos_token: String, eos_token: String) -> Result<Self> {
        let t = Self { source, bos_token, eos_token };
        if let Some(src) = &t.source {
            // Parse once now so that a broken template fails at load, naming the problem.
            t.environment().template_from_str(src).map_err(|e| ModelError::ChatTemplate(e.to_string()))?;
        }
        Ok(t)
    }

    /// True when the model has its own template.
    pub fn has_template(&self) -> bool {
        self.source.is_some()
    }

    /// The Jinja source, if any.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    fn environment(&self) -> Environment<'_> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env
    }

    /// Render `messages`; with `add_generation_prompt` the assistant turn is opened.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        if messages.is_empty() {
            return Err(ModelError::InvalidInput("a chat needs at least one message".into()));
        }
        let Some(src) = &self.source else {
            return Ok(messages.iter().map(|m| format!("{}\n\n", m.content)).collect());
        };
        let env = self.environment();
        let tmpl = env.template_from_str(src).map_err(|e| ModelError::ChatTemplate(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| ModelError::ChatTemplate(format!("{e:#}")))
    }

    /// Render one user message (with an optional system message), generation prompt on.
    pub fn render_user(&self, user: &str, system: Option<&str>) -> Result<String> {
        let mut msgs = Vec::new();
        if let Some(s) = system {
            msgs.push(Message::new("system", s));
        }
        msgs.push(Message::new("user", user));
        self.render(&msgs, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_format_without_template() {
        let t = ChatTemplate::new(None, "<bos>".into(), "<eos>".into()).unwrap();
        assert_eq!(t.render_user("Hi?", None).unwrap(), "Hi?\n\n");
        assert_eq!(t.render_user("Hi?", Some("Be brief.")).unwrap(), "Be brief.\n\nHi?\n\n");
    }

    #[test]
    fn broken_template_is_an_error_at_load() {
        let e = ChatTemplate::new(Some("{% for m in messages %}".into()), String::new(), String::new()).unwrap_err();
        assert!(e.to_string().contains("chat template"), "{e}");
    }

    #[test]
    fn raise_exception_surfaces_as_error() {
        let t = ChatTemplate::new(Some("{{ raise_exception('no system role') }}".into()), String::new(), String::new()).unwrap();
        let e = t.render_user("x", None).unwrap_err();
        assert!(e.to_string().contains("no system role"), "{e}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new(Some("{{ messages[0].content.strip() }}|{{ bos_token }}".into()), "<s>".into(), String::new()).unwrap();
        assert_eq!(t.render_user("  hi  ", None).unwrap(), "hi|<s>");
    }
}
