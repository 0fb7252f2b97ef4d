//! Writing models other tools load: Hugging Face model folders (merged weights). PEFT adapters are written by
//! `model::lora::LoraAdapter::save`.
pub mod hf;
