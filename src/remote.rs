//! The remote cache from the command line: which remote (`--remote URL`, else `HONE_REMOTE`,
//! else the workspace's `.hone/remote`, else the user's `~/.config/hone/remote`),
//! `hone cache push|pull|remote`, and progress bars for transfers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hone_engine::remote::{Fetched, Progress, Remote, RemoteRecord, label_of};
use hone_engine::workspace::Workspace;

use crate::exit::{EXIT_FAILED, Fatal};

/// The user's remote setting: `$XDG_CONFIG_HOME/hone/remote` or `~/.config/hone/remote`.
fn user_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("hone").join("remote"))
}

fn workspace_file(store_root: &Path) -> PathBuf {
    store_root.join("remote")
}

fn read_setting(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The remote's URL and where it was set: `flag` (a non-empty `--remote URL`), else
/// `HONE_REMOTE`, else the workspace's setting, else the user's.
pub fn url(flag: Option<&str>, store_root: &Path) -> Option<(String, String)> {
    if let Some(u) = flag.filter(|u| !u.is_empty()) {
        return Some((u.to_string(), "--remote".into()));
    }
    if let Some(u) = std::env::var("HONE_REMOTE").ok().filter(|u| !u.is_empty()) {
        return Some((u, "HONE_REMOTE".into()));
    }
    let ws = workspace_file(store_root);
    if let Some(u) = read_setting(&ws) {
        return Some((u, ws.display().to_string()));
    }
    let user = user_file()?;
    read_setting(&user).map(|u| (u, user.display().to_string()))
}

/// Opens the remote `flag` or the settings name, or says how to set one.
pub fn open(flag: Option<&str>, store_root: &Path) -> Result<Arc<Remote>, Fatal> {
    let Some((u, _)) = url(flag, store_root) else {
        return Err(Fatal::usage(
            "error: no remote cache is set\n   = help: give one with `--remote URL`, set HONE_REMOTE, or save one with `hone cache remote URL` (this workspace) or `hone cache remote URL --user`",
        ));
    };
    Remote::open(&u).map(Arc::new).map_err(|e| Fatal::usage(format!("error: {e}")))
}

/// `hone cache remote [URL] [--user]`: show the remote in effect, or save one.
pub fn set_or_show(ws: &Workspace, url_arg: Option<&str>, user: bool) -> Result<u8, Fatal> {
    let root = ws.store.root();
    let Some(u) = url_arg else {
        match url(None, root) {
            Some((u, from)) => println!("{}  (from {from})", label_of(&u)),
            None => println!("no remote cache set"),
        }
        return Ok(0);
    };
    Remote::open(u).map_err(|e| Fatal::usage(format!("error: {e}")))?;
    // A directory is saved absolute: the setting must not depend on where hone runs.
    let u = match u.contains("://") {
        true => u.to_string(),
        false => std::path::absolute(u).map_err(Fatal::workspace)?.display().to_string(),
    };
    let file = if user {
        user_file().ok_or_else(|| Fatal::usage("error: no HOME to keep the user's setting in"))?
    } else {
        workspace_file(root)
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(Fatal::workspace)?;
    }
    std::fs::write(&file, format!("{u}\n"))
        .map_err(|e| Fatal::workspace(format!("cannot write `{}`: {e}", file.display())))?;
    println!("remote cache: {}  (saved in {})", label_of(&u), file.display());
    Ok(0)
}

/// A transfer that failed, with what the user can do (`help`; for refused credentials, where
/// they come from).
fn failed(e: hone_engine::remote::RemoteError, help: &str) -> Fatal {
    let help = if e.is_denied() {
        format!(
            "check the credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for S3, GOOGLE_APPLICATION_CREDENTIALS for GCS, AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY for Azure; {}",
            help.split_once(';').map_or(help, |(first, _)| first)
        )
    } else {
        help.to_string()
    };
    Fatal { message: format!("error: {e}\n   = help: {help}"), code: EXIT_FAILED }
}

/// Whether record `stage` is one of `stages` (all when empty).
fn chosen(stages: &[String], stage: &str) -> bool {
    stages.is_empty() || stages.iter().any(|s| s == stage)
}

/// `hone cache push [STAGES]`: every record of the store (or of these stages) the remote
/// lacks, object first, record last. One listing of the remote's keys decides.
pub fn push(ws: &Workspace, flag: Option<&str>, stages: &[String]) -> Result<u8, Fatal> {
    let remote = open(flag, ws.store.root())?;
    let fail = |e| failed(e, "the local store is unchanged; push again when the remote answers");
    let have = remote.keys().map_err(fail)?;
    let (mut sent, mut present, mut bytes) = (0, 0, 0u64);
    for rec in ws.store.records().iter().filter(|r| chosen(stages, &r.stage)) {
        if have.contains(&rec.key) {
            present += 1;
        } else if ws.store.object_path(&rec.artifact).is_dir() {
            bytes += remote.push(&ws.store, rec, &Bar::new()).map_err(fail)?;
            sent += 1;
        }
    }
    println!(
        "pushed {sent} record{} ({}) to {}; {present} already there",
        if sent == 1 { "" } else { "s" },
        indicatif::BinaryBytes(bytes),
        remote.label()
    );
    Ok(0)
}

/// `hone cache pull [STAGES]`: every record the remote has and the store lacks (or those of
/// these stages), each object verified before it enters the store.
pub fn pull(ws: &Workspace, flag: Option<&str>, stages: &[String]) -> Result<u8, Fatal> {
    let remote = open(flag, ws.store.root())?;
    let fail = |e| {
        failed(
            e,
            "what was fetched before is in the store, verified; pull again when the remote answers",
        )
    };
    let keys = remote.keys().map_err(fail)?;
    let (mut got, mut unusable) = (0, 0);
    for key in keys {
        if ws.store.lookup(&key)?.is_some() {
            continue;
        }
        // The record names its stage: fetched (small) before deciding, and fetched once.
        let rec = match remote.record(&key).map_err(fail)? {
            RemoteRecord::Sound(r) if chosen(stages, &r.stage) => r,
            RemoteRecord::Unusable(why) if stages.is_empty() => {
                unusable += 1;
                eprintln!("warning: key {}: {why}; skipped", key.short());
                continue;
            }
            _ => continue,
        };
        match remote.fetch_record(&ws.store, &rec, &Bar::new()).map_err(fail)? {
            Fetched::Hit(_) => got += 1,
            Fetched::Absent => {}
            Fetched::Unusable(why) => {
                unusable += 1;
                eprintln!("warning: key {}: {why}; skipped", key.short());
            }
        }
    }
    println!(
        "pulled {got} record{} from {}{}",
        if got == 1 { "" } else { "s" },
        remote.label(),
        if unusable > 0 {
            format!("; {unusable} unusable (see the warnings)")
        } else {
            String::new()
        }
    );
    Ok(if unusable > 0 { EXIT_FAILED } else { 0 })
}

/// A progress bar with bytes, rate and ETA on stderr (hidden when it is not a terminal).
struct Bar(Mutex<Option<indicatif::ProgressBar>>);

impl Bar {
    fn new() -> Bar {
        Bar(Mutex::new(None))
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, total: Option<u64>) {
        let bar = indicatif::ProgressBar::with_draw_target(
            total,
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "  {msg} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(what.to_string());
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }
    fn advance(&self, bytes: u64) {
        if let Some(b) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            b.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish_and_clear();
        }
    }
}
