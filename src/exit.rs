//! How a command ends: its exit code, the [`Fatal`] error that ends it early, and Ctrl-C
//! ([`on_ctrl_c`]). `main.rs` lists the codes for `--help`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hone_engine::EngineError;

/// A stage failed, `cache verify` found corrupted objects, or a model command failed.
pub const EXIT_FAILED: u8 = 1;
/// Bad command-line usage (clap exits with it too).
pub const EXIT_USAGE: u8 = 2;
/// The pipeline file is missing or invalid.
pub const EXIT_INVALID: u8 = 3;
/// The workspace: busy with `--no-wait`, an unreadable store, an unknown stage id.
pub const EXIT_WORKSPACE: u8 = 4;
/// A stage waits for input from a person (`hone label`); everything before it is cached.
pub const EXIT_AWAITING: u8 = 5;
/// Interrupted (Ctrl-C).
pub const EXIT_INTERRUPTED: u8 = 130;

/// An error that ends the command: what to print and the exit code.
pub struct Fatal {
    pub message: String,
    pub code: u8,
}

impl Fatal {
    pub fn workspace(e: impl std::fmt::Display) -> Fatal {
        Fatal { message: format!("error: {e}"), code: EXIT_WORKSPACE }
    }

    /// A usage error (a flag, a setting): the message as given.
    pub fn usage(message: impl Into<String>) -> Fatal {
        Fatal { message: message.into(), code: EXIT_USAGE }
    }
}

impl From<EngineError> for Fatal {
    fn from(e: EngineError) -> Fatal {
        Fatal::workspace(e)
    }
}

impl From<hone_engine::files::StoreError> for Fatal {
    fn from(e: hone_engine::files::StoreError) -> Fatal {
        Fatal::workspace(e)
    }
}

/// A flag set by the first Ctrl-C (stages stop at their next check); a second one exits.
pub fn on_ctrl_c() -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(EXIT_INTERRUPTED as i32);
        }
        eprintln!(
            "hone: stopping (finished stages stay cached; press Ctrl-C again to quit at once)"
        );
    });
    cancel
}
