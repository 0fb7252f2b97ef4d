//! Chat templates for checkpoints that ship none (Gemma 3 270M's GGUF, for one), chosen by architecture: the
//! model's own format where its family has one, ChatML otherwise.
use super::chat_template::ChatTemplate;
use super::config::Arch;

/// Gemma 3's format, as its instruction-tuned checkpoints' template renders it: `<bos>`, then
/// `<start_of_turn>user\n{content}<end_of_turn>\n` and `<start_of_turn>model\n{content}<end_of_turn>\n` turns, the
/// system message folded into the first turn (`{system}\n\n{content}`), user content trimmed, and
/// `<start_of_turn>model\n` as the generation prompt. The model's own turns are rendered verbatim, untrimmed: an
/// episode's next render must extend exactly the tokens the model saw and sampled. Where the official template refuses (roles that do not
/// alternate, tool results), this one goes on: every non-assistant message is a user turn, a tool result reads
/// `<tool_response>\n{content}\n</tool_response>`, and tool specs follow the system message in the first turn in
/// the Hermes form of the ChatML fallback.
const GEMMA3_TEMPLATE: &str = r#"{{- bos_token }}
{%- if messages and messages[0].role == 'system' %}
    {%- set first_user_prefix = messages[0].content + '\n\n' %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set first_user_prefix = '' %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if tools %}
    {%- set ns = namespace(text='# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>') %}
    {%- for tool in tools %}
        {%- set ns.text = ns.text + '\n' + (tool | tojson) %}
    {%- endfor %}
    {%- set first_user_prefix = first_user_prefix + ns.text + '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n\n' %}
{%- endif %}
{%- for message in loop_messages %}
    {{- '<start_of_turn>' + ('model' if message.role == 'assistant' else 'user') + '\n' + (first_user_prefix if loop.first else '') }}
    {%- if message.role == 'tool' %}
        {{- '<tool_response>\n' + message.content + '\n</tool_response>' }}
    {%- elif message.role == 'assistant' %}
        {{- message.content }}
    {%- else %}
        {{- message.content | trim }}
    {%- endif %}
    {{- '<end_of_turn>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<start_of_turn>model\n' }}
{%- endif %}"#;

/// The name `info` shows for the built-in template of `arch`.
pub fn builtin_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Gemma3 => "Gemma 3",
        Arch::Llama | Arch::Qwen2 | Arch::Qwen3 => "ChatML",
    }
}

/// The template used for a checkpoint of `arch` without one (`bos_token` is the tokenizer's).
pub fn builtin_template(arch: Arch, bos_token: Option<String>, eos_token: Option<String>) -> ChatTemplate {
    match arch {
        Arch::Gemma3 => match ChatTemplate::new(GEMMA3_TEMPLATE, Some(bos_token.unwrap_or_else(|| "<bos>".into())), eos_token) {
            Ok(t) => t,
            // The source is a constant covered by tests; failing here is a bug in this file, not user input.
            Err(e) => panic!("built-in Gemma 3 template does not compile: {e}"),
        },
        Arch::Llama | Arch::Qwen2 | Arch::Qwen3 => ChatTemplate::chatml(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gemma3_folds_the_system_message_into_the_first_turn() {
        let t = builtin_template(Arch::Gemma3, Some("<bos>".into()), Some("<eos>".into()));
        let m = [
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": " What is 2+2? "}),
            json!({"role": "assistant", "content": " 4\n"}),
            json!({"role": "tool", "content": "{\"x\": 1}"}),
        ];
        let out = t.render(&m, None, true).unwrap_or_default();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe brief.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n 4\n<end_of_turn>\n\
             <start_of_turn>user\n<tool_response>\n{\"x\": 1}\n</tool_response><end_of_turn>\n<start_of_turn>model\n"
        );
        let no_system = t.render(&m[1..2], None, false).unwrap_or_default();
        assert_eq!(no_system, "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n");
        let tool = json!({"type": "function", "function": {"name": "add"}});
        let with_tools = t.render(&m[1..2], Some(&[tool]), true).unwrap_or_default();
        assert!(with_tools.starts_with("<bos><start_of_turn>user\n# Tools\n") && with_tools.contains("\n{\"type\": \"function\""), "{with_tools}");
        assert!(with_tools.ends_with("</tool_call>\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"), "{with_tools}");
    }
}
