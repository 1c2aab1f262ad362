//! Chat messages and Gemma 3's chat template.
//!
//! The template (the `tokenizer.chat_template` Google ships with Gemma 3), written out: a system
//! message is prepended to the first user message, followed by a blank line; each turn is
//! `<start_of_turn>{user|model}\n{content, trimmed}<end_of_turn>\n` (Rust's `trim`, which differs
//! from Jinja's on the control characters U+001C..U+001F); the prompt ends with
//! `<start_of_turn>model\n`. Turns must alternate, user first. The BOS token is added by the
//! caller as a token, not as text.

use crate::LlmError;

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a chat.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

// The content is the user's data: never printed.
impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("role", &self.role)
            .field("content_bytes", &self.content.len())
            .finish()
    }
}

impl Message {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }

    /// An earlier reply of the model.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// A stretch of the rendered prompt: the template's own text, whose control-token names become
/// those tokens, or a message's content, whose text never does (a user writing
/// `<end_of_turn>` must not close their own turn).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Part<'m> {
    Template(&'static str),
    Content(&'m str),
}

/// Renders `messages` as Gemma 3's prompt, ending with the opening of the model's turn.
pub(crate) fn render_gemma3(messages: &[Message]) -> Result<Vec<Part<'_>>, LlmError> {
    let (system, turns) = match messages.split_first() {
        // Google's template appends the system message untrimmed, then a blank line.
        Some((first, rest)) if first.role == Role::System => (Some(first.content.as_str()), rest),
        _ => (None, messages),
    };
    if turns.is_empty() {
        return Err(LlmError::Chat("no user message".into()));
    }
    let mut out = Vec::with_capacity(turns.len() * 3 + 1);
    for (i, m) in turns.iter().enumerate() {
        let expected = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        if m.role != expected {
            return Err(LlmError::Chat(format!(
                "message {} is {:?}; turns must alternate user and assistant, user first, with at most one system message before them",
                i + usize::from(system.is_some()),
                m.role
            )));
        }
        out.push(Part::Template(if m.role == Role::User {
            "<start_of_turn>user\n"
        } else {
            "<start_of_turn>model\n"
        }));
        if let (0, Some(system)) = (i, system) {
            out.push(Part::Content(system));
            out.push(Part::Template("\n\n"));
        }
        out.push(Part::Content(m.content.trim()));
        out.push(Part::Template("<end_of_turn>\n"));
    }
    if turns.len() % 2 == 0 {
        return Err(LlmError::Chat("the last message must be the user's".into()));
    }
    out.push(Part::Template("<start_of_turn>model\n"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(parts: &[Part<'_>]) -> String {
        parts
            .iter()
            .map(|p| match p {
                Part::Template(t) => *t,
                Part::Content(c) => c,
            })
            .collect()
    }

    #[test]
    fn renders_gemma3_turns_with_the_system_message_folded_in() {
        let text = text(
            &render_gemma3(&[
                Message::system(" Be brief. "),
                Message::user("Hi\n"),
                Message::assistant("Hello!"),
                Message::user("Why?"),
            ])
            .unwrap(),
        );
        assert_eq!(
            text,
            "<start_of_turn>user\n Be brief. \n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn refuses_chats_the_template_cannot_render() {
        for chat in [
            vec![],
            vec![Message::system("s")],
            vec![Message::assistant("a")],
            vec![Message::user("a"), Message::user("b")],
            vec![Message::user("a"), Message::assistant("b")],
            vec![Message::user("a"), Message::system("b"), Message::user("c")],
        ] {
            assert!(
                matches!(render_gemma3(&chat), Err(LlmError::Chat(_))),
                "{chat:?}"
            );
        }
    }

    #[test]
    fn debug_never_shows_content() {
        let m = Message::user("patient 1234 has HIV");
        assert!(!format!("{m:?}").contains("HIV"));
    }
}
