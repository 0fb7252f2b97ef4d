//! A conversation in the OpenAI form (tools, structured calls, tool messages) as one model's chat template is given
//! it. What the template renders itself it is given as is; what it would drop is written the way the agent's own
//! prompts write it, so the model never sees (or is trained on) a call to a tool it was not shown:
//! - `tools` it ignores go at the end of the system message, with how to call them (`agent::prompts::tools_system`),
//!   unless the system message already holds exactly that `<tools>` block, as the agent's system prompts do;
//! - `tool_calls` it ignores are written into the assistant text as `<tool_call>` blocks (the tool-call language
//!   the agent and `serve` parse), unless the text already spells those calls, as the model's own turns do;
//! - `tool` messages it cannot render become `<tool_response>` user turns (`policy::tool_result_as_user`).
//!
//! `autodidact serve` and the chat rows of `autodidact train` (`distil::chat`) both go through here.
use serde_json::{json, Value};

use super::policy::{opens_with_empty_think, renders_tool_role, tool_result_as_user, EMPTY_REASONING};
use crate::agent::prompts::{tools_block, tools_system};
use crate::data::dataset::dataset_messages;
use crate::data::{Message, Role};
use crate::model::LoadedModel;
use crate::tools::toolcall::{parse_turn, render_calls, Action};

/// What a model's chat template renders of a conversation with tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatForm {
    /// The `tools` list.
    pub tools: bool,
    /// An assistant message's structured `tool_calls`.
    pub tool_calls: bool,
    /// A `tool` message's content.
    pub tool_role: bool,
    /// The model's turn opens with an empty think block (`policy::opens_with_empty_think`).
    pub empty_think: bool,
}

impl ChatForm {
    /// Renders probes with the model's template: a part counts as rendered when the probe's name appears.
    pub fn of(model: &LoadedModel) -> Self {
        const PROBE: &str = "chat-form-probe-5e1f";
        let user = json!({"role": "user", "content": "u"});
        let call =
            json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": PROBE, "arguments": {}}}]});
        let tool_calls = model.render_chat(&[user.clone(), call], None, false).is_ok_and(|s| s.contains(PROBE));
        let spec = json!({"type": "function", "function": {"name": PROBE, "description": "d", "parameters": {"type": "object", "properties": {}}}});
        let tools = model.render_chat(&[user], Some(&[spec]), true).is_ok_and(|s| s.contains(PROBE));
        ChatForm { tools, tool_calls, tool_role: renders_tool_role(model), empty_think: opens_with_empty_think(model) }
    }

    /// One line for each part of some conversations that the template does not render, saying how it is written
    /// instead.
    pub fn notes<'a>(&self, conversations: impl IntoIterator<Item = (&'a [Message], &'a [Value])>) -> Vec<String> {
        let (mut tools, mut calls, mut results) = (false, false, false);
        for (messages, t) in conversations {
            tools |= !t.is_empty();
            calls |= messages.iter().any(|m| !m.tool_calls.is_empty());
            results |= messages.iter().any(|m| m.role == Role::Tool);
        }
        let mut out = Vec::new();
        if !self.tools && tools {
            out.push("the chat template does not render `tools`: they are written into the system message as a <tools> block".into());
        }
        if !self.tool_calls && calls {
            out.push("the chat template does not render `tool_calls`: calls are written into the assistant text as <tool_call> blocks".into());
        }
        if !self.tool_role && results {
            out.push("the chat template does not render `tool` messages: tool results are written as <tool_response> user turns".into());
        }
        out
    }

    /// The messages and tools as the template is given them, and how many messages were put in front (a system
    /// message holding the tools): message `i` of `messages` is message `i + shift` of the result.
    pub fn template_view<'t>(&self, messages: &[Message], tools: &'t [Value]) -> (Vec<Value>, Option<&'t [Value]>, usize) {
        let mut out = dataset_messages(messages);
        for (v, m) in out.iter_mut().zip(messages) {
            match m.role {
                Role::Assistant if !m.tool_calls.is_empty() => {
                    let spelled = matches!(parse_turn(&m.content), Ok(Action::Calls(calls)) if calls == m.tool_calls);
                    if spelled || !self.tool_calls {
                        // One copy of the calls, in the text.
                        if let Value::Object(o) = v {
                            o.remove("tool_calls");
                        }
                    }
                    if !spelled && !self.tool_calls {
                        let calls = render_calls(&m.tool_calls);
                        v["content"] = Value::String(if m.content.is_empty() { calls } else { format!("{}\n{calls}", m.content) });
                    }
                }
                Role::Tool if !self.tool_role => *v = tool_result_as_user(&m.content),
                _ => {}
            }
            if m.role == Role::Assistant && self.empty_think && v.get("reasoning_content").is_none() {
                v["reasoning_content"] = Value::String(EMPTY_REASONING.into());
            }
        }
        if tools.is_empty() {
            return (out, None, 0);
        }
        match messages.first() {
            // The agent's own prompts: the tools are in the system message already.
            Some(m) if m.role == Role::System && m.content.contains(&tools_block(tools)) => (out, None, 0),
            _ if self.tools => (out, Some(tools), 0),
            Some(m) if m.role == Role::System => {
                let text = tools_system(tools);
                out[0]["content"] = Value::String(if m.content.is_empty() { text } else { format!("{}\n\n{text}", m.content) });
                (out, None, 0)
            }
            _ => {
                out.insert(0, json!({"role": "system", "content": tools_system(tools)}));
                (out, None, 1)
            }
        }
    }
}
