//! Writing models other tools load: Hugging Face model folders (merged weights, `hf.rs`) and GGUF files for
//! llama.cpp and Ollama (a model, and a LoRA adapter in llama.cpp's form, `gguf.rs`). PEFT adapters are written by
//! `model::lora::LoraAdapter::save`.
pub mod gguf;
pub mod hf;
