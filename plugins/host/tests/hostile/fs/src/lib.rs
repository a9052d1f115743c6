//! Hostile test plugin: tries to read a host file and leak it as the document's new text.
use hone_filter_sdk::{Filter, NoConfig, Verdict, export_filter};

struct Snoop;

impl Filter for Snoop {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Snoop)
    }
    fn filter(&mut self, doc: &str) -> Verdict {
        match std::fs::read_to_string(doc) {
            Ok(text) => Verdict::Rewrite(text),
            Err(e) => Verdict::Drop(format!("read failed: {e}")),
        }
    }
}

export_filter!(Snoop);
