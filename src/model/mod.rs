//! Model runtime: configs, weights (GGUF, safetensors, hub), tokenizer, chat templates and the transformer.
pub mod chat_template;
pub mod config;
pub mod error;
pub mod gguf;
pub mod kv_cache;
pub mod lora;
pub mod linear;
pub mod loaded;
pub mod qdot;
pub mod quant;
pub mod rope;
pub mod source;
pub mod tokenizer;
pub mod transformer;
pub mod weights;

pub use config::{Arch, ModelConfig};
pub use error::{ModelError, Result};
pub use kv_cache::KvCache;
pub use transformer::{Logits, SeqInput, Transformer};
pub use loaded::LoadedModel;
