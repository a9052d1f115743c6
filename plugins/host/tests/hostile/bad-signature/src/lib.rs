//! Hostile test plugin: a component of another world than hone's (see `wit/filter.wit`
//! next to this crate); the host must refuse it at load.
wit_bindgen::generate!({ path: "wit", world: "filter" });

use exports::hone::filter::plugin::Guest;

struct Other;

impl Guest for Other {
    fn name() -> String {
        "other".into()
    }
    fn version() -> String {
        "0".into()
    }
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
    fn filter(docs: Vec<String>) -> Vec<bool> {
        docs.iter().map(|_| true).collect()
    }
}

export!(Other);
