//! Hostile test plugin: tries to open a TCP connection to the address in the document.
use hone_filter_sdk::{Filter, NoConfig, Verdict, export_filter};

struct Phone;

impl Filter for Phone {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Phone)
    }
    fn filter(&mut self, doc: &str) -> Verdict {
        match std::net::TcpStream::connect(doc) {
            Ok(_) => Verdict::Rewrite("connected".into()),
            Err(e) => Verdict::Drop(format!("connect failed: {e}")),
        }
    }
}

export_filter!(Phone);
