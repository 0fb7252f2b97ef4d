//! SentencePiece BPE vocabularies from GGUF (`tokenizer.ggml.model = "llama"`: Llama 2, Mistral, Gemma, Phi-3),
//! rebuilt as a `tokenizers` BPE so that encoding, decoding and the Hugging Face export share one implementation.
//!
//! llama.cpp's SentencePiece tokenizer (`llm_tokenizer_spm`, a port of SentencePiece's own BPE) starts from single
//! characters and keeps merging the adjacent pair whose concatenation is the vocabulary piece with the highest
//! score (the leftmost pair on ties); characters left outside the vocabulary become `<0xNN>` byte tokens. A BPE
//! with one merge for every way of cutting a piece into two pieces, ranked by that piece's score, makes the same
//! choices: this is how Hugging Face's `convert_slow_tokenizer` converts SentencePiece models. The two can only
//! part where different pieces share a score and their pairs overlap (the BPE then prefers the lower piece id,
//! llama.cpp the leftmost pair); Gemma 3's ordinary pieces all have distinct scores, and its ids are checked
//! against llama.cpp's in `tests/it/tokenizer_gemma3.rs`.
//!
//! Spaces become `▁` before merging. `tokenizer.ggml.add_space_prefix` (llama.cpp's default when absent: true;
//! Gemma writes false) also puts a `▁` before every stretch of text, which means after every special token
//! too, as llama.cpp does; the decoder then strips one leading space so plain text round-trips.
use super::from_gguf::{gguf_float_array, gguf_opt_bool, gguf_opt_id};
use super::*;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};

/// SentencePiece's visible space.
pub(super) const SPACE: &str = "▁";

/// The BPE, normalizer and decoder for a "llama" GGUF; added tokens are the caller's.
pub(super) fn sentencepiece_bpe(metadata: &HashMap<String, GgufValue>, tokens: &[&str], vocab: Vocab) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let scores = gguf_float_array(metadata, "tokenizer.ggml.scores")?;
    if scores.len() != tokens.len() {
        return Err(TokenizerError::LengthMismatch { field: "tokenizer.ggml.scores", len: scores.len(), vocab_size: tokens.len() });
    }
    // A NaN score has no rank, and which merges win would depend on sort internals.
    if let Some(index) = scores.iter().position(|s| s.is_nan()) {
        return Err(TokenizerError::BadVocab { field: "tokenizer.ggml.scores", index, problem: "is NaN".into() });
    }
    let unk = gguf_opt_id(metadata, "tokenizer.ggml.unknown_token_id", tokens.len())?.map(|id| tokens[id as usize].to_string());
    let merges = merges_by_score(tokens, &scores, &vocab);
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(TokenizerError::Build)?;

    let add_space_prefix = gguf_opt_bool(metadata, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let escape = Replace::new(" ", SPACE).map_err(TokenizerError::Build)?;
    let normalizer: NormalizerWrapper =
        if add_space_prefix { NormalizerSequence::new(vec![Prepend::new(SPACE.into()).into(), escape.into()]).into() } else { escape.into() };
    let mut decoders: Vec<DecoderWrapper> =
        vec![Replace::new(SPACE, " ").map_err(TokenizerError::Build)?.into(), ByteFallback::new().into(), Fuse::new().into()];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_normalizer(Some(normalizer)).map_err(TokenizerError::Build)?.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}

/// Every cut of every piece into two vocabulary pieces, best piece score first; ties in the order of Hugging
/// Face's `SentencePieceExtractor` (piece id, then the halves' ids), so an exported `tokenizer.json` matches
/// what `transformers` would convert from the same SentencePiece model.
fn merges_by_score(tokens: &[&str], scores: &[f64], vocab: &Vocab) -> Vec<(String, String)> {
    let mut ranked: Vec<(f64, u32, u32, u32)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let id = id as u32;
        if vocab.get(*piece) != Some(&id) {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(at);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                // + 0.0 folds -0.0 into 0.0: they are one score to llama.cpp, two to `total_cmp`.
                ranked.push((scores[id as usize] + 0.0, id, l, r));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2, a.3).cmp(&(b.1, b.2, b.3))));
    ranked.into_iter().map(|(_, _, l, r)| (tokens[l as usize].to_string(), tokens[r as usize].to_string())).collect()
}
