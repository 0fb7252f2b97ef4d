//! Where a turn stops: stop tokens and stop strings, for batched generation and for the server's streams alike.
use super::params::SamplingParams;
use crate::model::tokenizer::Tokenizer;

/// `t` ends the turn: one of the tokenizer's end-of-turn tokens or of the request's `stop_tokens`.
pub fn is_stop_token(tok: &Tokenizer, params: &SamplingParams, t: u32) -> bool {
    tok.is_stop(t) || params.stop_tokens.contains(&t)
}

/// Where the earliest of the request's stop strings starts in `text`.
pub fn stop_string_at(params: &SamplingParams, text: &str) -> Option<usize> {
    params.stop_strings.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// Bytes at the end of `text` not to stream yet: an incomplete character (decoded as U+FFFD) or the beginning
/// of a stop string.
pub fn held_back(text: &str, stops: &[String]) -> usize {
    if text.ends_with('\u{FFFD}') {
        return '\u{FFFD}'.len_utf8();
    }
    stops
        .iter()
        .flat_map(|s| (1..s.len()).filter(|&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
        .filter(|p| text.ends_with(p))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_split_characters_and_stop_prefixes() {
        assert_eq!(held_back("abc", &[]), 0);
        assert_eq!(held_back("ab\u{FFFD}", &[]), 3);
        assert_eq!(held_back("answer: 4</to", &["</tool_call>".into()]), 4);
        assert_eq!(held_back("answer", &["</tool_call>".into()]), 0);
    }

    #[test]
    fn the_earliest_stop_string_wins() {
        let p = SamplingParams { stop_strings: vec!["END".into(), "\n\n".into()], ..SamplingParams::default() };
        assert_eq!(stop_string_at(&p, "a\n\nb END"), Some(1));
        assert_eq!(stop_string_at(&p, "no stop"), None);
        assert_eq!(stop_string_at(&SamplingParams::default(), "END"), None);
    }
}
