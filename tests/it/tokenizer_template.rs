//! Tokenizer and chat-template tests against the real default model (SmolLM2-135M-Instruct Q4_1 GGUF) and
//! against reference renders.
//!
//! Every expected prompt below was printed by jinja2 3.1.6 in the environment transformers builds for
//! `apply_chat_template` (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, its
//! `tojson`), from the same templates and messages. Tool specs are written with sorted keys so the expected
//! strings hold whether or not object key order is preserved (see the chat_template module docs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use autodidact::model::chat_template::{ChatTemplate, TemplateError};
use autodidact::model::tokenizer::Tokenizer;
use candle_core::quantized::gguf_file;
use proptest::prelude::*;
use serde_json::{json, Value};

/// The default model, fetched with `scripts/fetch-model.sh` when missing.
fn model_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        let script = root.join("scripts/fetch-model.sh");
        let status = std::process::Command::new("bash").arg(&script).status().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(status.success(), "{} failed; tests need {}", script.display(), path.display());
    }
    path
}

struct Smol {
    metadata: HashMap<String, gguf_file::Value>,
    tokenizer: Tokenizer,
}

/// Loaded once: every test thread shares the parsed metadata and the tokenizer.
fn smol() -> &'static Smol {
    static SMOL: OnceLock<Smol> = OnceLock::new();
    SMOL.get_or_init(|| {
        let path = model_path();
        let mut file = std::fs::File::open(&path).expect("open GGUF");
        let content = gguf_file::Content::read(&mut file).expect("read GGUF metadata");
        let tokenizer = Tokenizer::from_gguf(&content.metadata).expect("tokenizer from GGUF");
        Smol { metadata: content.metadata, tokenizer }
    })
}

fn smol_template() -> ChatTemplate {
    let s = smol();
    let source = match s.metadata.get("tokenizer.chat_template") {
        Some(gguf_file::Value::String(t)) => t,
        other => panic!("GGUF has no string tokenizer.chat_template: {other:?}"),
    };
    ChatTemplate::new(source, s.tokenizer.bos_token(), s.tokenizer.eos_token()).expect("compile")
}

/// Texts chosen to break naive tokenizers: prefix spaces, digit splitting, CRLF, multi-byte and
/// multi-codepoint characters, control bytes, special-token lookalikes.
const TEXTS: &[&str] = &[
    "Hello, world!",
    "  leading spaces",
    "trailing spaces   ",
    "\n\nnewlines\n\n\n",
    "tabs\tand\r\nCRLF",
    "12*7 = 84; 3.14159; 1,000,000; 2024-07-26",
    "def f(x):\n    return x ** 2  # square\n",
    "fn main() { println!(\"{}\", 1 << 3); }",
    "Ünïcödé façade naïve — “quotes” …",
    "日本語のテキストと中文",
    "emoji 🤖🎉👍🏽 family 👨‍👩‍👧",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "not special: <|im_start |> <im_start> <|im_end",
    "",
    " ",
    "\u{0}\u{1}\u{7f}",
    "e\u{301} vs \u{e9}",
];

#[test]
fn reference_ids_match_candle_notes() {
    let t = &smol().tokenizer;
    let text = "<|im_start|>user\nWhat is 12*7?<|im_end|>\n";
    let ids = t.encode(text).unwrap();
    assert_eq!(ids, [1, 4093, 198, 1780, 314, 216, 33, 34, 26, 39, 47, 2, 198]);
    assert_eq!(t.decode(&ids, false).unwrap(), text);
    assert_eq!(t.decode(&ids, true).unwrap(), "user\nWhat is 12*7?\n");
}

#[test]
fn token_roles_come_from_gguf() {
    let t = &smol().tokenizer;
    assert_eq!((t.bos_id(), t.eos_id(), t.pad_id()), (Some(1), 2, Some(2)));
    assert_eq!(t.bos_token().as_deref(), Some("<|im_start|>"));
    assert_eq!(t.eos_token().as_deref(), Some("<|im_end|>"));
    assert_eq!(t.stop_ids(), &[0, 2], "<|endoftext|> and <|im_end|>");
    assert!(t.is_stop(2) && t.is_stop(0) && !t.is_stop(1) && !t.is_stop(198));
    assert_eq!(t.vocab_size(), 49152);
    assert_eq!(t.special_tokens().len(), 17);
    assert_eq!(t.special_tokens()[16], "<empty_output>");
    assert!(!t.add_bos());
    assert_eq!(t.model_max_length(), Some(8192));
    assert_eq!(t.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(t.id_to_token(198).as_deref(), Some("Ċ"));
}

#[test]
fn no_prefix_space_after_special_tokens() {
    // candle's from_gguf gets exactly these wrong.
    let t = &smol().tokenizer;
    assert_eq!(t.encode("user").unwrap(), [4093]);
    assert_eq!(t.encode("<|im_end|>\n").unwrap(), [2, 198]);
}

#[test]
fn decode_inverts_encode_on_varied_texts() {
    let t = &smol().tokenizer;
    for text in TEXTS {
        let ids = t.encode(text).unwrap();
        assert_eq!(&t.decode(&ids, false).unwrap(), text, "ids {ids:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn decode_inverts_encode_on_arbitrary_strings(
        a in any::<String>(),
        b in "[ -~\n\t]{0,40}",
        special in prop::sample::select(vec!["", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<file_sep>"]),
    ) {
        let t = &smol().tokenizer;
        let text = format!("{a}{special}{b}");
        let ids = t.encode(&text).unwrap();
        prop_assert_eq!(t.decode(&ids, false).unwrap(), text);
    }
}

#[test]
fn hf_export_reloads_with_identical_ids() {
    let s = smol();
    let template = match s.metadata.get("tokenizer.chat_template") {
        Some(gguf_file::Value::String(t)) => t.as_str(),
        _ => panic!("no chat template"),
    };
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("tokenizer.json");
    let config_path = dir.path().join("tokenizer_config.json");
    std::fs::write(&json_path, s.tokenizer.to_tokenizer_json().unwrap()).unwrap();
    let config = s.tokenizer.tokenizer_config_json(Some(template));
    assert_eq!(config["bos_token"], "<|im_start|>");
    assert_eq!(config["eos_token"], "<|im_end|>");
    assert_eq!(config["pad_token"], "<|im_end|>");
    assert_eq!(config["add_bos_token"], false);
    assert_eq!(config["chat_template"], template);
    assert_eq!(config["model_max_length"], 8192);
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();

    let back = Tokenizer::from_files(&json_path, Some(&config_path)).unwrap();
    for text in TEXTS.iter().chain(&["<|im_start|>user\nWhat is 12*7?<|im_end|>\n"]) {
        assert_eq!(back.encode(text).unwrap(), s.tokenizer.encode(text).unwrap(), "{text:?}");
    }
    assert_eq!((back.bos_id(), back.eos_id(), back.pad_id()), (Some(1), 2, Some(2)));
    assert_eq!(back.stop_ids(), s.tokenizer.stop_ids());
    assert_eq!(back.special_tokens(), s.tokenizer.special_tokens());
    assert_eq!(back.vocab_size(), 49152);
    assert_eq!(back.model_max_length(), Some(8192));
}

#[test]
fn smollm2_template_with_system_message() {
    let messages = [json!({"role": "system", "content": "You are a concise math tutor."}), json!({"role": "user", "content": "What is 12*7?"})];
    assert_eq!(smol_template().render(&messages, None, true).unwrap(), SMOL_SYS_USER);
}

#[test]
fn smollm2_template_injects_default_system_message() {
    let t = smol_template();
    let user_only = [json!({"role": "user", "content": "What is 12*7?"})];
    assert_eq!(t.render(&user_only, None, true).unwrap(), SMOL_USER_ONLY);
    let multi = [
        json!({"role": "user", "content": "Hi"}),
        json!({"role": "assistant", "content": "Hello! How can I help?"}),
        json!({"role": "user", "content": "Add 2 and 3."}),
    ];
    assert_eq!(t.render(&multi, None, false).unwrap(), SMOL_MULTI_NOGEN);
}

#[test]
fn rendered_prompt_tokenizes_with_single_special_ids() {
    let t = &smol().tokenizer;
    let ids = t.encode(SMOL_SYS_USER).unwrap();
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 3, "three <|im_start|>");
    assert_eq!(ids.iter().filter(|&&id| id == 2).count(), 2, "two <|im_end|>");
    let generation_prompt = [vec![1], t.encode("assistant\n").unwrap()].concat();
    assert!(ids.ends_with(&generation_prompt), "{ids:?}");
    assert_eq!(t.decode(&ids, false).unwrap(), SMOL_SYS_USER);
}

fn tools() -> Vec<Value> {
    vec![
        json!({"function": {"description": "Evaluate an arithmetic expression and return the result.",
            "name": "calculator",
            "parameters": {"properties": {"expression": {"description": "Arithmetic expression, e.g. 2+2",
                "type": "string"}}, "required": ["expression"], "type": "object"}}, "type": "function"}),
        json!({"function": {"description": "Current local time in a city.", "name": "clock",
            "parameters": {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}},
            "type": "function"}),
    ]
}

/// System prompt, two parallel tool calls, two tool results, a final answer and a new question.
fn tool_conversation() -> Vec<Value> {
    vec![
        json!({"role": "system", "content": "You are a careful assistant."}),
        json!({"role": "user", "content": "What is 12*7, and what time is it in Paris?"}),
        json!({"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "12*7"}}},
            {"type": "function", "function": {"name": "clock", "arguments": {"city": "Paris"}}}]}),
        json!({"role": "tool", "tool_call_id": "call_0", "name": "calculator", "content": "84"}),
        json!({"role": "tool", "tool_call_id": "call_1", "name": "clock", "content": "14:05"}),
        json!({"role": "assistant", "content": "12*7 = 84, and it is 14:05 in Paris."}),
        json!({"role": "user", "content": "Thanks!"}),
    ]
}

fn user_only() -> Vec<Value> {
    vec![json!({"role": "user", "content": "What is 12*7?"})]
}

#[test]
fn qwen25_template_renders_tools_calls_and_results() {
    assert_eq!(QWEN25_TEMPLATE.len(), 2507, "fixture must be the template byte for byte");
    let t = ChatTemplate::new(QWEN25_TEMPLATE, None, Some("<|im_end|>".into())).unwrap();
    assert_eq!(t.render(&tool_conversation(), Some(&tools()), true).unwrap(), QWEN_TOOLS);
    assert_eq!(t.render(&user_only(), Some(&tools()[..1]), true).unwrap(), QWEN_TOOLS_NOSYS);
    assert_eq!(t.render(&user_only(), None, true).unwrap(), QWEN_PLAIN_DEFAULT_SYS);
    assert_eq!(t.source(), QWEN25_TEMPLATE);
}

#[test]
fn chatml_fallback_renders_documented_format() {
    let t = ChatTemplate::chatml();
    let sys_user = [json!({"role": "system", "content": "You are a concise math tutor."}), json!({"role": "user", "content": "What is 12*7?"})];
    assert_eq!(t.render(&sys_user, None, true).unwrap(), CHATML_SYS_USER);
    assert_eq!(t.render(&user_only(), None, true).unwrap(), CHATML_USER_ONLY);
    assert_eq!(t.render(&tool_conversation(), Some(&tools()), true).unwrap(), CHATML_TOOLS);
    assert_eq!(t.render(&user_only(), Some(&tools()[..1]), true).unwrap(), CHATML_TOOLS_NOSYS);
    let string_args = [
        json!({"role": "user", "content": "12*7?"}),
        json!({"role": "assistant", "content": "Let me compute.", "tool_calls": [
            {"type": "function", "function": {"name": "calculator", "arguments": "{\"expression\": \"12*7\"}"}}]}),
        json!({"role": "tool", "content": "84"}),
    ];
    assert_eq!(t.render(&string_args, Some(&tools()[..1]), false).unwrap(), CHATML_STRING_ARGS);
}

#[test]
fn chatml_fallback_matches_qwen25_when_a_system_message_is_given() {
    let qwen = ChatTemplate::new(QWEN25_TEMPLATE, None, None).unwrap();
    let chatml = ChatTemplate::chatml();
    let conversation = tool_conversation();
    assert_eq!(chatml.render(&conversation, Some(&tools()), true).unwrap(), qwen.render(&conversation, Some(&tools()), true).unwrap());
}

#[test]
fn raise_exception_surfaces_the_template_message() {
    let source = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must start with a user message') }}{% endif %}ok";
    let t = ChatTemplate::new(source, None, None).unwrap();
    assert_eq!(t.render(&user_only(), None, false).unwrap(), "ok");
    let err = t.render(&[json!({"role": "assistant", "content": "hi"})], None, false).unwrap_err();
    match &err {
        TemplateError::Raised(message) => {
            assert_eq!(message, "Conversations must start with a user message")
        }
        other => panic!("expected Raised, got {other:?}"),
    }
    assert!(err.to_string().contains("Conversations must start with a user message"), "{err}");
}

#[test]
fn compile_errors_name_the_problem() {
    let err = ChatTemplate::new("{% for m in messages %}{{ m.content }", None, None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TemplateError::Compile(_)), "{err:?}");
    assert!(msg.contains("syntax error") && msg.contains("line 1"), "{msg}");
}

/// Qwen/Qwen2.5-0.5B-Instruct `chat_template` from its tokenizer_config.json, verbatim.
const QWEN25_TEMPLATE: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

// Reference renders (see the module docs for how they were produced).
const SMOL_SYS_USER: &str = "<|im_start|>system\nYou are a concise math tutor.<|im_end|>\n<|im_start|>user\n\
    What is 12*7?<|im_end|>\n<|im_start|>assistant\n";

const SMOL_USER_ONLY: &str = "<|im_start|>system\n\
    You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
    <|im_start|>user\nWhat is 12*7?<|im_end|>\n<|im_start|>assistant\n";

const SMOL_MULTI_NOGEN: &str = "<|im_start|>system\n\
    You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
    <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n\
    <|im_start|>user\nAdd 2 and 3.<|im_end|>\n";

const QWEN_TOOLS: &str = "<|im_start|>system\nYou are a careful assistant.\n\n# Tools\n\n\
    You may call one or more functions to assist with the user query.\n\n\
    You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n\
    {\"function\": {\"description\": \"Evaluate an arithmetic expression and return the result.\", \"name\": \"calculator\", \"parameters\": {\"properties\": {\"expression\": {\"description\": \"Arithmetic expression, e.g. 2+2\", \"type\": \"string\"}}, \"required\": [\"expression\"], \"type\": \"object\"}}, \"type\": \"function\"}\n\
    {\"function\": {\"description\": \"Current local time in a city.\", \"name\": \"clock\", \"parameters\": {\"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"], \"type\": \"object\"}}, \"type\": \"function\"}\n\
    </tools>\n\n\
    For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n\
    <tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n\
    </tool_call><|im_end|>\n<|im_start|>user\n\
    What is 12*7, and what time is it in Paris?<|im_end|>\n<|im_start|>assistant\n\
    <tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"12*7\"}}\n\
    </tool_call>\n<tool_call>\n{\"name\": \"clock\", \"arguments\": {\"city\": \"Paris\"}}\n\
    </tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n84\n</tool_response>\n\
    <tool_response>\n14:05\n</tool_response><|im_end|>\n<|im_start|>assistant\n\
    12*7 = 84, and it is 14:05 in Paris.<|im_end|>\n<|im_start|>user\nThanks!<|im_end|>\n\
    <|im_start|>assistant\n";

const QWEN_TOOLS_NOSYS: &str = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\
    \n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
    You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n\
    {\"function\": {\"description\": \"Evaluate an arithmetic expression and return the result.\", \"name\": \"calculator\", \"parameters\": {\"properties\": {\"expression\": {\"description\": \"Arithmetic expression, e.g. 2+2\", \"type\": \"string\"}}, \"required\": [\"expression\"], \"type\": \"object\"}}, \"type\": \"function\"}\n\
    </tools>\n\n\
    For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n\
    <tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n\
    </tool_call><|im_end|>\n<|im_start|>user\nWhat is 12*7?<|im_end|>\n<|im_start|>assistant\n";

const QWEN_PLAIN_DEFAULT_SYS: &str = "<|im_start|>system\n\
    You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
    <|im_start|>user\nWhat is 12*7?<|im_end|>\n<|im_start|>assistant\n";

const CHATML_SYS_USER: &str = "<|im_start|>system\nYou are a concise math tutor.<|im_end|>\n<|im_start|>user\n\
    What is 12*7?<|im_end|>\n<|im_start|>assistant\n";

const CHATML_USER_ONLY: &str = "<|im_start|>user\nWhat is 12*7?<|im_end|>\n<|im_start|>assistant\n";

const CHATML_TOOLS: &str = "<|im_start|>system\nYou are a careful assistant.\n\n# Tools\n\n\
    You may call one or more functions to assist with the user query.\n\n\
    You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n\
    {\"function\": {\"description\": \"Evaluate an arithmetic expression and return the result.\", \"name\": \"calculator\", \"parameters\": {\"properties\": {\"expression\": {\"description\": \"Arithmetic expression, e.g. 2+2\", \"type\": \"string\"}}, \"required\": [\"expression\"], \"type\": \"object\"}}, \"type\": \"function\"}\n\
    {\"function\": {\"description\": \"Current local time in a city.\", \"name\": \"clock\", \"parameters\": {\"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"], \"type\": \"object\"}}, \"type\": \"function\"}\n\
    </tools>\n\n\
    For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n\
    <tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n\
    </tool_call><|im_end|>\n<|im_start|>user\n\
    What is 12*7, and what time is it in Paris?<|im_end|>\n<|im_start|>assistant\n\
    <tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"12*7\"}}\n\
    </tool_call>\n<tool_call>\n{\"name\": \"clock\", \"arguments\": {\"city\": \"Paris\"}}\n\
    </tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n84\n</tool_response>\n\
    <tool_response>\n14:05\n</tool_response><|im_end|>\n<|im_start|>assistant\n\
    12*7 = 84, and it is 14:05 in Paris.<|im_end|>\n<|im_start|>user\nThanks!<|im_end|>\n\
    <|im_start|>assistant\n";

const CHATML_TOOLS_NOSYS: &str = "<|im_start|>system\n# Tools\n\n\
    You may call one or more functions to assist with the user query.\n\n\
    You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n\
    {\"function\": {\"description\": \"Evaluate an arithmetic expression and return the result.\", \"name\": \"calculator\", \"parameters\": {\"properties\": {\"expression\": {\"description\": \"Arithmetic expression, e.g. 2+2\", \"type\": \"string\"}}, \"required\": [\"expression\"], \"type\": \"object\"}}, \"type\": \"function\"}\n\
    </tools>\n\n\
    For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n\
    <tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n\
    </tool_call><|im_end|>\n<|im_start|>user\nWhat is 12*7?<|im_end|>\n<|im_start|>assistant\n";

const CHATML_STRING_ARGS: &str = "<|im_start|>system\n# Tools\n\n\
    You may call one or more functions to assist with the user query.\n\n\
    You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n\
    {\"function\": {\"description\": \"Evaluate an arithmetic expression and return the result.\", \"name\": \"calculator\", \"parameters\": {\"properties\": {\"expression\": {\"description\": \"Arithmetic expression, e.g. 2+2\", \"type\": \"string\"}}, \"required\": [\"expression\"], \"type\": \"object\"}}, \"type\": \"function\"}\n\
    </tools>\n\n\
    For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n\
    <tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n\
    </tool_call><|im_end|>\n<|im_start|>user\n12*7?<|im_end|>\n<|im_start|>assistant\n\
    Let me compute.\n<tool_call>\n\
    {\"name\": \"calculator\", \"arguments\": {\"expression\": \"12*7\"}}\n\
    </tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n84\n\
    </tool_response><|im_end|>\n";
