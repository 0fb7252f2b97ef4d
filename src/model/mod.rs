//! Model runtime: configs, weights (GGUF, safetensors, hub), tokenizer, chat templates and the transformer.
pub mod chat_template;
pub mod tokenizer;
