//! Leases: who holds something in a workspace that several hosts may share (over NFS, where
//! `flock` is not reliable), and whether that holder is still alive.
//!
//! An [`Owner`] names a process (host, boot, pid and the process's start time, its Slurm job)
//! and carries a lease: the time it was last renewed and for how long a renewal counts. A
//! [`Heartbeat`] renews it while the thing is held. Whether a holder still holds:
//! - on this host (same name, same boot), exactly: while its process lives, however old the
//!   lease (a stopped process keeps it), and not a moment after it died;
//! - on another host, by the lease: until `lease_secs` after its last renewal, by this host's
//!   clock (so the hosts' clocks must agree to within a lease minus the renewal interval;
//!   NTP does far better).
//!
//! [`LockFile`] is the workspace lock built on it: a file created atomically (hard link of a
//! complete temporary file, which NFS does atomically) holding its owner, taken over only
//! from a dead or expired holder. Its holder renews it by setting the modification time of
//! the file it linked, never by writing the path: a holder that stalled and lost the lock
//! to another cannot overwrite the new holder's file. Staging directories record their
//! owner the same way ([`crate::store::Store::stage`]).
//!
//! `HONE_HOSTNAME` overrides the host name (tests simulate other hosts with it) and
//! `HONE_LEASE_SECS` the lease (default 60 s; renewed every sixth of it).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::files::{StoreError, write_atomic};

/// The default lease, when `HONE_LEASE_SECS` is not set.
pub const DEFAULT_LEASE_SECS: u64 = 60;

/// A process holding something, and its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub host: String,
    /// This boot of the host (`/proc/sys/kernel/random/boot_id`; empty when unknown).
    #[serde(default)]
    pub boot: String,
    pub pid: u32,
    /// When the process started, in clock ticks since boot (0 when unknown): tells a live
    /// process from a later one that reuses its pid.
    #[serde(default)]
    pub proc_start: u64,
    /// The Slurm job it runs in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub started_unix: u64,
    pub renewed_unix: u64,
    pub lease_secs: u64,
    /// Unique to this holding: tells one holder's lock from the next one's.
    pub token: String,
}

/// Whether an [`Owner`] still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Its process on this host is gone (or the host rebooted since).
    Dead,
    /// Its lease ran out this many seconds ago (a holder on another host).
    Expired(u64),
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// This host's name (`HONE_HOSTNAME` when set).
pub fn host_name() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        if let Some(h) = std::env::var("HONE_HOSTNAME").ok().filter(|h| !h.is_empty()) {
            return h;
        }
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or truncates.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if rc == 0 && end > 0 {
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "unknown-host".into()
        }
    })
}

fn boot_id() -> &'static str {
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

/// The lease a holder takes (`HONE_LEASE_SECS`, at least 1 s).
pub fn lease_secs() -> u64 {
    std::env::var("HONE_LEASE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LEASE_SECS)
        .max(1)
}

/// A process's start time (field 22 of `/proc/PID/stat`), if it runs; `Some(0)` where there
/// is no `/proc` but the process exists.
fn proc_start(pid: u32) -> Option<u64> {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The command name (field 2) may hold spaces and parentheses: count from its end.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(19)?.parse().ok())
            .or(Some(0)),
        Err(_) if Path::new("/proc/self/stat").exists() => None,
        Err(_) => {
            // SAFETY: signal 0 only checks that the process exists.
            let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
            (rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)).then_some(0)
        }
    }
}

impl Owner {
    /// This process, with a fresh lease.
    pub fn me() -> Owner {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Owner {
            host: host_name().to_string(),
            boot: boot_id().to_string(),
            pid,
            proc_start: proc_start(pid).unwrap_or(0),
            job: std::env::var("SLURM_JOB_ID").ok().filter(|j| !j.is_empty()),
            started_unix: now.as_secs(),
            renewed_unix: now.as_secs(),
            lease_secs: lease_secs(),
            token: format!(
                "{}-{pid}-{}-{}",
                host_name(),
                now.as_nanos(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    /// Whether it still holds, seen from this process at `now` (unix seconds).
    pub fn liveness(&self, now: u64) -> Liveness {
        if self.host == host_name() {
            if !self.boot.is_empty() && !boot_id().is_empty() && self.boot != boot_id() {
                return Liveness::Dead;
            }
            return match proc_start(self.pid) {
                Some(start) if self.proc_start == 0 || start == 0 || start == self.proc_start => {
                    Liveness::Alive
                }
                _ => Liveness::Dead,
            };
        }
        let end = self.renewed_unix.saturating_add(self.lease_secs);
        if now > end { Liveness::Expired(now - end) } else { Liveness::Alive }
    }

    /// "pid 12 on host n1 (Slurm job 7), since 2026-11-29 16:57:03 UTC, lease renewed 3 s ago".
    pub fn describe(&self, now: u64) -> String {
        let job = self.job.as_ref().map(|j| format!(" (Slurm job {j})")).unwrap_or_default();
        format!(
            "pid {} on host {}{job}, since {}, lease renewed {} s ago",
            self.pid,
            self.host,
            utc(self.started_unix),
            now.saturating_sub(self.renewed_unix)
        )
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("an owner serialises")
    }

    /// The owner recorded in `path`: `Ok(None)` when there is no such file, `Err` with its
    /// bytes when they are not an owner.
    pub fn read(path: &Path) -> io::Result<Result<Owner, Vec<u8>>> {
        let bytes = fs::read(path)?;
        Ok(serde_json::from_slice(&bytes).map_err(|_| bytes))
    }

    /// Write this owner, renewed now, to `path` (atomically).
    pub fn renew_at(&mut self, path: &Path) -> Result<(), StoreError> {
        self.renewed_unix = now_unix();
        write_atomic(path, &self.to_json())
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a unix time.
fn utc(t: u64) -> String {
    let c = crate::time::civil(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Calls `renew` every sixth of a lease until dropped.
pub struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(lease_secs: u64, mut renew: impl FnMut() -> bool + Send + 'static) -> Heartbeat {
        let every = Duration::from_millis(lease_secs.saturating_mul(1000) / 6)
            .max(Duration::from_millis(100));
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hone-lease".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    if !renew() {
                        break;
                    }
                }
            })
            .ok();
        Heartbeat { stop: Some(stop), thread }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A lock file some process holds ([`LockFile::take`]), renewed while this lives and removed
/// when it is dropped (if it is still ours).
pub struct LockFile {
    path: PathBuf,
    token: String,
    /// The holder whose lock was taken over (dead or expired), and how.
    pub took_over: Option<(Owner, Liveness)>,
    _heartbeat: Heartbeat,
}

/// Why [`LockFile::take`] did not take the lock.
pub enum Taken {
    Yes(LockFile),
    /// A live holder has it.
    Held(Owner),
}

impl LockFile {
    /// Try once to take the lock at `path`, taking it over from a holder that is dead or
    /// whose lease expired.
    pub fn take(path: &Path) -> io::Result<Taken> {
        LockFile::take_for(path, lease_secs())
    }

    /// [`LockFile::take`] with a lease of `lease_secs`.
    pub fn take_for(path: &Path, lease_secs: u64) -> io::Result<Taken> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let me = Owner { lease_secs, ..Owner::me() };
        let mut took_over = None;
        // At most a few rounds: each one either takes the lock, finds a live holder, or
        // removes a dead one.
        for _ in 0..8 {
            let mut tmp = tempfile::Builder::new().prefix(".lock-").tempfile_in(dir)?;
            tmp.write_all(&me.to_json())?;
            tmp.as_file().sync_all()?;
            let linked = fs::hard_link(tmp.path(), path);
            // A lost NFS reply can report a failed link that happened: the file says whose it is.
            let holder = match read_lock(path) {
                Ok(h) => h,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    linked?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if holder.as_ref().is_ok_and(|h| h.token == me.token) {
                let (p, token, file) =
                    (path.to_path_buf(), me.token.clone(), tmp.as_file().try_clone()?);
                let heartbeat = Heartbeat::start(me.lease_secs, move || match Owner::read(&p) {
                    Ok(Ok(h)) if h.token == token => {
                        if let Err(e) = file.set_modified(SystemTime::now()) {
                            tracing::warn!(
                                "cannot renew the workspace lock `{}`: {e}",
                                p.display()
                            );
                        }
                        true
                    }
                    _ => {
                        tracing::warn!(
                            "lost the workspace lock `{}`: another run took it over (this run stopped renewing it for a whole lease)",
                            p.display()
                        );
                        false
                    }
                });
                return Ok(Taken::Yes(LockFile {
                    path: path.to_path_buf(),
                    token: me.token,
                    took_over,
                    _heartbeat: heartbeat,
                }));
            }
            let now = now_unix();
            let (stale, why) = match holder {
                Ok(h) => match h.liveness(now) {
                    Liveness::Alive => return Ok(Taken::Held(h)),
                    l => (Ok(h.clone()), Some((h, l))),
                },
                // Empty (the `flock` file of an older hone) or not an owner: nobody holds it.
                Err(bytes) => (Err(bytes), None),
            };
            if break_stale(path, &stale, &me.token)? {
                took_over = why.or(took_over);
            }
        }
        Err(io::Error::other(format!(
            "cannot take the lock `{}`: it keeps changing hands",
            path.display()
        )))
    }
}

/// The owner of the lock at `path`, its lease renewed as late as the file's modification
/// time (which the holder's heartbeat sets).
fn read_lock(path: &Path) -> io::Result<Result<Owner, Vec<u8>>> {
    let mut file = fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let touched = file.metadata()?.modified()?;
    let touched = touched.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(serde_json::from_slice::<Owner>(&bytes)
        .map(|o| Owner { renewed_unix: o.renewed_unix.max(touched), ..o })
        .map_err(|_| bytes))
}

/// Remove the stale lock at `path` unless it changed since it was read as `stale`. Renaming
/// it aside first makes two processes breaking the same stale lock safe: only one rename
/// succeeds, and a fresh lock moved aside by mistake is linked back.
fn break_stale(path: &Path, stale: &Result<Owner, Vec<u8>>, me: &str) -> io::Result<bool> {
    let aside = path.with_file_name(format!(".lock-stale-{me}"));
    match fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    let moved = Owner::read(&aside)?;
    let same = match (&moved, stale) {
        (Ok(a), Ok(b)) => a.token == b.token,
        (Err(a), Err(b)) => a == b,
        _ => false,
    };
    if !same {
        // Someone took the lock between our read and our rename: give it back.
        let _ = fs::hard_link(&aside, path);
    }
    let _ = fs::remove_file(&aside);
    Ok(same)
}

impl Drop for LockFile {
    fn drop(&mut self) {
        if let Ok(Ok(h)) = Owner::read(&self.path)
            && h.token == self.token
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write `owner` to `path` as a holder that last renewed at its `renewed_unix`.
    fn plant(path: &Path, owner: &Owner) {
        fs::write(path, owner.to_json()).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(owner.renewed_unix);
        fs::File::options().write(true).open(path).unwrap().set_modified(at).unwrap();
    }

    fn other_host(renewed_ago: u64, lease: u64) -> Owner {
        let mut o = Owner::me();
        o.host = "elsewhere".into();
        o.renewed_unix = now_unix() - renewed_ago;
        o.lease_secs = lease;
        o
    }

    #[test]
    fn a_holder_here_lives_as_long_as_its_process_and_one_elsewhere_as_long_as_its_lease() {
        let me = Owner::me();
        let now = now_unix();
        assert_eq!(
            me.liveness(now + 10_000),
            Liveness::Alive,
            "a live process here holds past its lease"
        );
        let mut gone = me.clone();
        gone.pid = u32::MAX / 2; // no such process
        assert_eq!(gone.liveness(now), Liveness::Dead);
        let mut reused = me.clone();
        reused.proc_start += 1; // our pid, but a process that started at another time
        if me.proc_start != 0 {
            assert_eq!(reused.liveness(now), Liveness::Dead);
        }
        let mut rebooted = me.clone();
        rebooted.boot = "another-boot".into();
        if !me.boot.is_empty() {
            assert_eq!(rebooted.liveness(now), Liveness::Dead);
        }
        assert_eq!(other_host(30, 60).liveness(now), Liveness::Alive);
        assert_eq!(other_host(90, 60).liveness(now), Liveness::Expired(30));
        let d = other_host(3, 60).describe(now);
        assert!(
            d.starts_with(&format!("pid {} on host elsewhere, since ", me.pid))
                && d.ends_with("lease renewed 3 s ago"),
            "{d}"
        );
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_000_000), "2026-11-30 00:53:20 UTC");
    }

    #[test]
    fn one_of_many_contenders_takes_the_lock_and_the_next_takes_it_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let barrier = std::sync::Barrier::new(8);
        let taken: Vec<Option<LockFile>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        match LockFile::take(&path).unwrap() {
                            Taken::Yes(l) => Some(l),
                            Taken::Held(h) => {
                                assert_eq!(
                                    (h.pid, h.host.as_str()),
                                    (std::process::id(), host_name())
                                );
                                None
                            }
                        }
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(taken.iter().filter(|t| t.is_some()).count(), 1);
        drop(taken);
        assert!(!path.exists(), "released");
        let Taken::Yes(l) = LockFile::take(&path).unwrap() else { panic!("free again") };
        assert!(l.took_over.is_none());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary files left");
    }

    #[test]
    fn a_dead_or_expired_holder_is_taken_over_a_live_one_elsewhere_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let live = other_host(5, 60);
        plant(&path, &live);
        assert!(matches!(LockFile::take(&path).unwrap(), Taken::Held(h) if h == live));

        let expired = other_host(100, 60);
        plant(&path, &expired);
        let Taken::Yes(l) = LockFile::take(&path).unwrap() else { panic!("expired: taken over") };
        assert!(
            matches!(&l.took_over, Some((o, Liveness::Expired(40 | 41))) if *o == expired),
            "{:?}",
            l.took_over
        );
        drop(l);

        let mut dead = Owner::me();
        dead.pid = u32::MAX / 2;
        plant(&path, &dead);
        let Taken::Yes(l) = LockFile::take(&path).unwrap() else { panic!("dead: taken over") };
        assert_eq!(l.took_over.as_ref().map(|t| &t.1), Some(&Liveness::Dead));
        drop(l);

        // The empty lock file an older hone locked with `flock` holds nothing.
        fs::write(&path, "").unwrap();
        let Taken::Yes(l) = LockFile::take(&path).unwrap() else { panic!("legacy file") };
        assert!(l.took_over.is_none());
        drop(l);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_holder_renews_its_lease_and_leaves_alone_a_lock_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        // A one-second lease is renewed every 166 ms.
        let Taken::Yes(l) = LockFile::take_for(&path, 1).unwrap() else { panic!() };
        let mut first = read_lock(&path).unwrap().unwrap();
        assert_eq!(first.lease_secs, 1);
        first.renewed_unix -= 1000;
        plant(&path, &first);
        std::thread::sleep(Duration::from_millis(500));
        let renewed = read_lock(&path).unwrap().unwrap();
        assert_eq!(renewed.token, first.token);
        assert!(renewed.renewed_unix + 5 >= now_unix(), "renewed by the heartbeat");
        // Someone took it over (this holder stalled for a whole lease): the heartbeat leaves
        // their file alone, stops, and dropping the lock leaves theirs.
        let other = other_host(30, 60);
        fs::remove_file(&path).unwrap();
        plant(&path, &other);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(read_lock(&path).unwrap().unwrap(), other, "not renewed by the old holder");
        drop(l);
        assert_eq!(read_lock(&path).unwrap().unwrap(), other);
    }
}
