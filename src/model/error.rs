use std::path::PathBuf;

/// Errors from loading and running models. Every variant names the file it is about, because users pass
/// several files (weights, config, tokenizer) and need to know which one is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid GGUF file: {msg}")]
    Gguf { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("{path}: missing field `{field}`")]
    MissingField { path: PathBuf, field: String },
    #[error("{path}: unsupported architecture `{arch}` (supported: {})", super::config::Arch::supported())]
    UnknownArch { path: PathBuf, arch: String },
    #[error("{path}: tensor `{tensor}` has unsupported type {dtype} (supported: {})", super::gguf_header::supported_names().join(", "))]
    UnsupportedDType { path: PathBuf, tensor: String, dtype: String },
    #[error("{path}: missing tensor `{tensor}`")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}` has shape {got:?}, expected {expected:?}")]
    Shape { path: PathBuf, tensor: String, got: Vec<usize>, expected: Vec<usize> },
    #[error("{path}: tensor `{tensor}` lies beyond the end of the file (file truncated?): needs bytes up to {end}, file has {len}")]
    Truncated { path: PathBuf, tensor: String, end: u64, len: u64 },
    #[error("prompt of {tokens} tokens does not fit the context of {context} tokens")]
    ContextOverflow { tokens: usize, context: usize },
    #[error("{path}: tokenizer: {source}")]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: super::tokenizer::TokenizerError,
    },
    #[error("{path}: chat template: {message}")]
    UntrustedText { path: PathBuf, message: String },
    #[error("{path}: chat template: {source}")]
    Template {
        path: PathBuf,
        #[source]
        source: super::chat_template::TemplateError,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }
    pub fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ModelError::Invalid { path: path.into(), msg: msg.into() }
    }
}
