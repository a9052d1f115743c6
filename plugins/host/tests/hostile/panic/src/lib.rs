//! Hostile test plugin: panics on a document containing `boom`, calls `exit(7)` on one
//! containing `exit` (WASI p2 passes only success or failure, so the host sees exit(1)),
//! keeps the rest.
use hone_filter_sdk::{Filter, NoConfig, Verdict, export_filter};

struct Fragile;

impl Filter for Fragile {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Fragile)
    }
    fn filter(&mut self, doc: &str) -> Verdict {
        if doc.contains("boom") {
            panic!("hostile: cannot stand {doc:?}");
        }
        if doc.contains("exit") {
            std::process::exit(7);
        }
        Verdict::Keep
    }
}

export_filter!(Fragile);
