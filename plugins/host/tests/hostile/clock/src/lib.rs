//! Hostile test plugin: sleeps for an hour, which fuel alone cannot bound (the host would
//! block), and stamps documents with the time.
use hone_filter_sdk::{Filter, NoConfig, Verdict, export_filter};

struct Sleepy;

impl Filter for Sleepy {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Sleepy)
    }
    fn filter(&mut self, _doc: &str) -> Verdict {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Verdict::Rewrite(format!("{}", now.as_secs()))
    }
}

export_filter!(Sleepy);
