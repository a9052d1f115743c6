//! Hostile test plugin: `filter` allocates 1 MiB blocks until memory runs out. The host's
//! memory limit must stop it. Blocks are reserved, not filled, so memory (not fuel) runs out
//! first.
use hone_filter_sdk::{Filter, NoConfig, Verdict, export_filter};

struct Bomb(Vec<Vec<u8>>);

impl Filter for Bomb {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Bomb(Vec::new()))
    }
    fn filter(&mut self, _doc: &str) -> Verdict {
        loop {
            let mut block = Vec::<u8>::with_capacity(1 << 20);
            block.push(7);
            self.0.push(std::hint::black_box(block));
        }
    }
}

export_filter!(Bomb);
