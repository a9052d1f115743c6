//! Hostile test plugin: answers a batch with one verdict too few.
use hone_filter_sdk::{Filter, NoConfig, Verdict, export_filter};

struct Short;

impl Filter for Short {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Short)
    }
    fn filter(&mut self, _doc: &str) -> Verdict {
        Verdict::Keep
    }
    fn filter_batch(&mut self, docs: &[String]) -> Vec<Verdict> {
        docs.iter().skip(1).map(|_| Verdict::Keep).collect()
    }
}

export_filter!(Short);
