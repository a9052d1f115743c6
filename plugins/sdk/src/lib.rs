//! The guest SDK for hone's data-filter plugins: implement [`Filter`], call [`export_filter!`],
//! build with `cargo build --release --target wasm32-wasip2`, and the `.wasm` in
//! `target/wasm32-wasip2/release/` is a component of world `hone:filter/filter@0.1.0`
//! (`plugins/wit/filter.wit`). The plugin never sees the ABI.
//!
//! ```ignore
//! use hone_filter_sdk::{Filter, Verdict, export_filter};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config { min_words: usize }
//!
//! struct MinWords(Config);
//!
//! impl Filter for MinWords {
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, String> { Ok(MinWords(config)) }
//!     fn filter(&mut self, doc: &str) -> Verdict {
//!         let n = doc.split_whitespace().count();
//!         if n >= self.0.min_words { Verdict::Keep } else { Verdict::Drop(format!("{n} words < {}", self.0.min_words)) }
//!     }
//! }
//!
//! export_filter!(MinWords);
//! ```
//!
//! The host calls `init` once per instance with the stage's `with:` config as JSON; the SDK
//! parses it into `Filter::Config` (serde, so `#[serde(deny_unknown_fields)]` reports typos)
//! and keeps the filter for the life of the instance. A panic becomes a trap: hone reports it
//! with the panic message (from stderr), the plugin's name and the document index.

// The generated bindings and the export macro name this crate by its path, also from inside it.
extern crate self as hone_filter_sdk;

#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "filter",
        pub_export_macro: true,
        export_macro_name: "__export_filter_world",
        default_bindings_module: "::hone_filter_sdk::__bindings",
        runtime_path: "::hone_filter_sdk::__rt",
    });
}

/// The runtime the generated bindings call into, re-exported so that plugins need not depend
/// on `wit-bindgen` themselves.
#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

pub use __bindings::hone::filter::types::Verdict;

/// The WIT package this SDK implements; the host refuses plugins built for another version.
pub const WIT_PACKAGE: &str = "hone:filter@0.1.0";

/// A data filter. One value lives per plugin instance: `new` runs once with the config, then
/// `filter_batch` runs for every batch of documents, in order.
pub trait Filter: Sized + 'static {
    /// The `with:` config, deserialised from JSON. Use [`NoConfig`] when the plugin takes
    /// none (an absent config arrives as `{}`).
    type Config: serde::de::DeserializeOwned;

    /// Build the filter from its config; an `Err` rejects the config (hone shows the message).
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Decide one document.
    fn filter(&mut self, doc: &str) -> Verdict;

    /// Decide a batch: exactly one verdict per document, in order. Override it when a
    /// batch-level computation is cheaper than per-document calls.
    fn filter_batch(&mut self, docs: &[String]) -> Vec<Verdict> {
        docs.iter().map(|d| self.filter(d)).collect()
    }
}

/// Send a message to hone's log, tagged with the plugin's name.
pub mod log {
    use crate::__bindings::hone::filter::log::{Level, log};

    pub fn error(message: &str) {
        log(Level::Error, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
}

/// The config of a plugin that takes none: accepts `{}` and rejects any key.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// Parse the config JSON the host passes to `init`.
#[doc(hidden)]
pub fn __parse_config<C: serde::de::DeserializeOwned>(json: &str) -> Result<C, String> {
    serde_json::from_str(json).map_err(|e| format!("invalid config: {e}"))
}

/// Export a [`Filter`] implementation as the plugin's component interface. The plugin's name
/// and version are the crate's `CARGO_PKG_NAME` and `CARGO_PKG_VERSION`.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        const _: () = {
            use $crate::__bindings::exports::hone::filter::plugin::Guest;

            ::std::thread_local! {
                static __HONE_FILTER: ::std::cell::RefCell<::std::option::Option<$filter>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            struct __HonePlugin;

            impl Guest for __HonePlugin {
                fn name() -> ::std::string::String {
                    ::std::string::String::from(env!("CARGO_PKG_NAME"))
                }

                fn version() -> ::std::string::String {
                    ::std::string::String::from(env!("CARGO_PKG_VERSION"))
                }

                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    let config = $crate::__parse_config::<<$filter as $crate::Filter>::Config>(&config)?;
                    let filter = <$filter as $crate::Filter>::new(config)?;
                    __HONE_FILTER.with(|f| *f.borrow_mut() = ::std::option::Option::Some(filter));
                    ::std::result::Result::Ok(())
                }

                fn filter(docs: ::std::vec::Vec<::std::string::String>) -> ::std::vec::Vec<$crate::Verdict> {
                    __HONE_FILTER.with(|f| {
                        let mut f = f.borrow_mut();
                        let filter = f.as_mut().expect("hone called `filter` before `init`");
                        <$filter as $crate::Filter>::filter_batch(filter, &docs)
                    })
                }
            }

            $crate::__bindings::__export_filter_world!(__HonePlugin with_types_in $crate::__bindings);
        };
    };
}
