//! Hostile test plugin: exports hone's interface name and version but no `filter` function
//! (see `wit/filter.wit` next to this crate); the host must refuse it at load.
wit_bindgen::generate!({ path: "wit", world: "filter" });

use exports::hone::filter::plugin::Guest;

struct Partial;

impl Guest for Partial {
    fn name() -> String {
        "partial".into()
    }
    fn version() -> String {
        "0".into()
    }
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

export!(Partial);
