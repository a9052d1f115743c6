//! `lang-id`: keep documents written in the configured languages, by counting the stop words
//! of seven European languages (the tables and the scorer are in `detect.rs`, plain Rust, so
//! the benchmark can run the same logic natively).
//! Config: `{ "languages": ["en"], "min_ratio": 0.1 }` (both optional).

mod detect;

use hone_filter_sdk::{Filter, Verdict, export_filter};

struct LangId(detect::Detector);

impl Filter for LangId {
    type Config = detect::Config;

    fn new(config: detect::Config) -> Result<Self, String> {
        detect::Detector::new(config).map(LangId)
    }

    fn filter(&mut self, doc: &str) -> Verdict {
        match self.0.decide(doc) {
            None => Verdict::Keep,
            Some(reason) => Verdict::Drop(reason.to_string()),
        }
    }
}

export_filter!(LangId);
