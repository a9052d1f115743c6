//! Hostile test plugin: `filter` never returns. The host's fuel bound must stop it.
use hone_filter_sdk::{Filter, NoConfig, Verdict, export_filter};

struct Spin;

impl Filter for Spin {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Spin)
    }
    fn filter(&mut self, doc: &str) -> Verdict {
        let mut n = doc.len() as u64;
        loop {
            n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export_filter!(Spin);
