//! `min-words`: drop documents with fewer than `min_words` whitespace-separated words.
//! The smallest useful plugin; config: `{ "min_words": 5 }`.

use hone_filter_sdk::{Filter, Verdict, export_filter};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    min_words: usize,
}

struct MinWords {
    min: usize,
    // One reason string per plugin, so hone's filter report groups the drops.
    reason: String,
}

impl Filter for MinWords {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        Ok(MinWords { min: c.min_words, reason: format!("fewer than {} words", c.min_words) })
    }

    fn filter(&mut self, doc: &str) -> Verdict {
        if doc.split_whitespace().nth(self.min.saturating_sub(1)).is_some() || self.min == 0 {
            Verdict::Keep
        } else {
            Verdict::Drop(self.reason.clone())
        }
    }
}

export_filter!(MinWords);
