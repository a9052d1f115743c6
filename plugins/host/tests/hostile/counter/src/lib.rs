//! Test plugin: drops every document with a reason saying how often `init` ran in this
//! instance, how many batches it saw, and its config's `tag`; logs one line per batch.
use std::sync::atomic::{AtomicU32, Ordering};

use hone_filter_sdk::{Filter, Verdict, export_filter, log};

static INITS: AtomicU32 = AtomicU32::new(0);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    tag: String,
}

struct Counter {
    tag: String,
    batches: u32,
}

impl Filter for Counter {
    type Config = Config;
    fn new(c: Config) -> Result<Self, String> {
        INITS.fetch_add(1, Ordering::Relaxed);
        if c.tag.is_empty() {
            return Err("`tag` must not be empty".into());
        }
        Ok(Counter { tag: c.tag, batches: 0 })
    }
    fn filter(&mut self, _doc: &str) -> Verdict {
        unreachable!("filter_batch is overridden")
    }
    fn filter_batch(&mut self, docs: &[String]) -> Vec<Verdict> {
        self.batches += 1;
        log::info(&format!("counter: batch {} of {} documents", self.batches, docs.len()));
        let reason = format!("inits={} batches={} tag={}", INITS.load(Ordering::Relaxed), self.batches, self.tag);
        docs.iter().map(|_| Verdict::Drop(reason.clone())).collect()
    }
}

export_filter!(Counter);
