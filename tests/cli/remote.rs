//! The remote cache through the `hone` binary, on a local directory remote: push from one
//! workspace and a fresh one fetches instead of running; `--push` uploads as stages finish;
//! a corrupt remote object is a miss with a warning (the stage runs); a server that is not
//! there is a clear error for `push` and a warning for `run`; credentials never show.

use crate::support::Ws;

const PIPELINE: &str = "name: remote
stages:
  a:
    uses: command
    with: { cmd: 'head -c 200000 /dev/zero | tr \"\\0\" x > $HONE_OUT/big.txt; echo one > $HONE_OUT/a.txt' }
  b:
    uses: command
    inputs: { a: a }
    with: { cmd: 'cat $HONE_IN_a/a.txt $HONE_IN_a/a.txt > $HONE_OUT/b.txt' }
";

fn ws() -> Ws {
    let ws = Ws::new();
    ws.write("pipeline.yaml", PIPELINE);
    ws
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn a_pushed_store_is_fetched_by_a_fresh_workspace_instead_of_run() {
    let remote = tempfile::tempdir().unwrap();
    let url = remote.path().to_str().unwrap();
    let a = ws();
    a.hone(&["run"]).ok();
    a.hone(&["cache", "push", "--remote", url]).ok().stdout_has("pushed 2 records");
    // Nothing new: one listing, nothing sent.
    a.hone(&["cache", "push", "--remote", url]).ok().stdout_has("pushed 0 records");

    let b = ws();
    let plan = b.hone(&["plan", "--remote", url]).ok();
    assert!(plan.stdout.contains("fetch  a"), "{}", plan.stdout);
    assert!(plan.stdout.contains("1 to fetch"), "{}", plan.stdout);
    let run = b.hone(&["run", "--remote", url, "--json"]).ok();
    let ev = events(&run.stdout);
    assert!(ev.iter().all(|e| e["event"] != "stage_started"), "nothing ran: {}", run.stdout);
    let fetched: Vec<_> =
        ev.iter().filter(|e| e["event"] == "stage_cached" && e["from"].is_string()).collect();
    assert_eq!(fetched.len(), 2, "{}", run.stdout);
    assert_eq!(
        a.hone(&["digest", ".hone/objects"]).stdout,
        b.hone(&["digest", ".hone/objects"]).stdout
    );

    // A pull into a third workspace, then a rerun there is all local hits.
    let c = ws();
    c.hone(&["cache", "pull", "--remote", url]).ok().stdout_has("pulled 2 records");
    let run = c.hone(&["run", "--json"]).ok();
    assert!(events(&run.stdout).iter().all(|e| e["event"] != "stage_started"));
}

#[test]
fn a_corrupt_remote_object_is_a_miss_and_the_stage_runs() {
    let remote = tempfile::tempdir().unwrap();
    let url = remote.path().to_str().unwrap();
    let a = ws();
    a.hone(&["run", "--push", "--remote", url]).ok();
    let objects = remote.path().join("hone-v1/objects");
    let tars: Vec<_> = std::fs::read_dir(&objects).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(tars.len(), 2, "--push uploaded both results as they finished");
    for t in &tars {
        let mut bytes = std::fs::read(t).unwrap();
        if let Some(i) = bytes.windows(8).position(|w| w == b"xxxxxxxx") {
            bytes[i] = b'y';
            std::fs::write(t, bytes).unwrap();
        }
    }
    let b = ws();
    let run = b.hone(&["run", "--remote", url]).ok();
    assert!(run.stderr.contains("unusable, so it runs"), "{}", run.stderr);
    assert!(run.stderr.contains("has digest"), "{}", run.stderr);
    assert!(run.stderr.contains("ran     a"), "{}", run.stderr);
    // The store holds only what it computed: its object matches the uncorrupted one.
    assert_eq!(
        a.hone(&["digest", ".hone/objects"]).stdout,
        b.hone(&["digest", ".hone/objects"]).stdout
    );
}

#[test]
fn an_absent_server_is_an_error_for_push_and_a_warning_for_run_and_secrets_never_show() {
    let a = ws();
    a.hone(&["run"]).ok();
    let dead = "http://127.0.0.1:9/cache";
    a.hone(&["cache", "push", "--remote", dead])
        .code(1)
        .stderr_has("remote http://127.0.0.1:9/cache")
        .stderr_has("the local store is unchanged");
    let b = ws();
    let run = b.hone(&["run", "--remote", dead]).ok();
    assert!(
        run.stderr.contains("cannot fetch from the remote cache, so it runs"),
        "{}",
        run.stderr
    );

    let out = a.hone(&["cache", "push", "--remote", "http://me:hunter2@127.0.0.1:9/c"]).code(2);
    assert!(out.stderr.contains("password") && !out.stderr.contains("hunter2"), "{}", out.stderr);
    a.hone(&["cache", "push"]).code(2).stderr_has("no remote cache is set");
    a.hone(&["cache", "remote"]).ok().stdout_has("no remote cache set");
}

#[test]
fn the_remote_setting_comes_from_the_flag_the_environment_or_the_workspace() {
    let remote = tempfile::tempdir().unwrap();
    let url = remote.path().to_str().unwrap();
    let a = ws();
    a.hone(&["run"]).ok();
    a.hone(&["cache", "remote", url]).ok().stdout_has("saved in");
    a.hone(&["cache", "remote"]).ok().stdout_has("(from ");
    a.hone(&["cache", "push"]).ok().stdout_has("pushed 2 records");
    let other = tempfile::tempdir().unwrap();
    let out = a.cmd(&["cache", "push"]).env("HONE_REMOTE", other.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("pushed 2 records"));
}

/// The `moto_server` command (moto, from PyPI: an S3 server for tests): `HONE_MOTO`, else on
/// PATH, else `.ci/venv/bin/moto_server`.
fn moto_bin() -> Option<std::path::PathBuf> {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [
        std::env::var_os("HONE_MOTO").map(std::path::PathBuf::from),
        Some("moto_server".into()),
        Some(repo.join(".ci/venv/bin/moto_server")),
    ]
    .into_iter()
    .flatten()
    .find(|c| {
        std::process::Command::new(c).arg("--help").output().is_ok_and(|o| o.status.success())
    })
}

/// [`moto_bin`], or `None` after saying the tests that need it skipped (a failure with
/// `HONE_REQUIRE_S3=1`).
fn moto_or_skip() -> Option<std::path::PathBuf> {
    let bin = moto_bin();
    if bin.is_none() {
        crate::support::system_part(
            "an S3 server (moto)",
            false,
            "`pip install 'moto[server]'` (or set HONE_MOTO to its moto_server)",
            "HONE_REQUIRE_S3",
        );
    }
    bin
}

/// A running S3 server on loopback with one bucket, stopped when dropped.
struct S3 {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3 {
    fn start(bin: &std::path::Path) -> S3 {
        S3::spawn(bin, false)
    }

    /// A server that checks every request's signature against the credentials it knows (none
    /// here: moto's `INITIAL_NO_AUTH_ACTION_COUNT=0`), so any key is refused.
    fn start_checking_credentials(bin: &std::path::Path) -> S3 {
        S3::spawn(bin, true)
    }

    fn spawn(bin: &std::path::Path, auth: bool) -> S3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut c = std::process::Command::new(bin);
        c.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if auth {
            c.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let s = S3 { child: c.spawn().unwrap(), endpoint: format!("http://127.0.0.1:{port}") };
        let t0 = std::time::Instant::now();
        loop {
            let up = if auth {
                // Any HTTP answer (a refusal included) means the server is up.
                !matches!(
                    ureq::get(&s.endpoint).call(),
                    Err(ureq::Error::Io(_)) | Err(ureq::Error::ConnectionFailed)
                )
            } else {
                ureq::put(&format!("{}/team", s.endpoint)).send_empty().is_ok()
            };
            if up {
                return s;
            }
            assert!(t0.elapsed().as_secs() < 60, "the S3 server did not start");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// `hone ARGS` in `ws` with this server's endpoint and the given secret key.
    fn hone(&self, ws: &Ws, secret: &str, args: &[&str]) -> crate::support::Out {
        let mut c = ws.cmd(args);
        c.env("AWS_ACCESS_KEY_ID", "hone-test")
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT", &self.endpoint)
            .env("AWS_ALLOW_HTTP", "true");
        crate::support::Out::from(c.output().unwrap())
    }
}

/// Through a real S3 server (moto): a 40 MB object goes up as a multipart upload and comes
/// back verified; two pushers of the same keys at once both succeed; a stopped server is a
/// clear error that leaves the store intact; the secret key never shows.
#[test]
fn an_s3_server_carries_the_cache_between_workspaces() {
    let Some(bin) = moto_or_skip() else { return };
    let s3 = S3::start(&bin);
    let url = "s3://team/hone";
    let secret = "s3cr3t-never-printed";
    let big = "name: big
stages:
  big: { uses: command, with: { cmd: 'head -c 40000000 /dev/urandom > $HONE_OUT/weights.bin' } }
  small: { uses: command, inputs: { w: big }, with: { cmd: 'wc -c < $HONE_IN_w/weights.bin > $HONE_OUT/n' } }
";
    let a = Ws::new();
    a.write("pipeline.yaml", big);
    s3.hone(&a, secret, &["run"]).ok();
    let pushed = s3.hone(&a, secret, &["cache", "push", "--remote", url]).ok();
    assert!(pushed.stdout.contains("pushed 2 records (38.15 MiB)"), "{}", pushed.stdout);
    // Two pushers of the same keys at once: both succeed, and the remote serves them.
    let (a2, a3) = (ws(), ws());
    a2.hone(&["run"]).ok();
    a3.hone(&["run"]).ok();
    std::thread::scope(|sc| {
        let t1 = sc.spawn(|| s3.hone(&a2, secret, &["cache", "push", "--remote", url]));
        let t2 = sc.spawn(|| s3.hone(&a3, secret, &["cache", "push", "--remote", url]));
        (t1.join().unwrap().ok(), t2.join().unwrap().ok())
    });
    let a4 = ws();
    let run = s3.hone(&a4, secret, &["run", "--remote", url, "--json"]).ok();
    assert!(events(&run.stdout).iter().all(|e| e["event"] != "stage_started"), "{}", run.stdout);

    let b = Ws::new();
    b.write("pipeline.yaml", big);
    let run = s3.hone(&b, secret, &["run", "--remote", url, "--json"]).ok();
    assert!(events(&run.stdout).iter().all(|e| e["event"] != "stage_started"), "{}", run.stdout);
    assert_eq!(
        a.hone(&["digest", ".hone/objects"]).stdout,
        b.hone(&["digest", ".hone/objects"]).stdout
    );

    assert!(!format!("{}{}{}", run.stdout, run.stderr, pushed.stderr).contains(secret));

    drop(s3);
    let c = Ws::new();
    c.write("pipeline.yaml", big);
    let out = c.hone(&["cache", "pull", "--remote", url]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("remote s3://team/hone"), "{}", out.stderr);
    assert!(!out.stderr.contains(secret));
    assert_eq!(c.objects(), 0, "nothing half-fetched in the store");
}

/// Wrong credentials: a push is an error that says the server refused them and where
/// credentials come from (the store untouched, the secret never shown); a run with the remote
/// warns once and runs its stages without it.
#[test]
fn refused_credentials_are_a_clear_error_for_push_and_one_warning_for_run() {
    let Some(bin) = moto_or_skip() else { return };
    let s3 = S3::start_checking_credentials(&bin);
    let url = "s3://team/hone";
    let secret = "wr0ng-s3cr3t-never-printed";
    let a = ws();
    a.hone(&["run"]).ok();
    let before = a.hone(&["digest", ".hone/objects"]).stdout;
    let out = s3
        .hone(&a, secret, &["cache", "push", "--remote", url])
        .code(1)
        .stderr_has("the server refused the credentials (InvalidAccessKeyId)")
        .stderr_has("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        .stderr_has("the local store is unchanged");
    assert!(!out.stderr.contains(secret) && !out.stdout.contains(secret));
    assert_eq!(a.hone(&["digest", ".hone/objects"]).stdout, before);

    let b = ws();
    let run = s3.hone(&b, secret, &["run", "--remote", url, "--push"]).ok();
    assert_eq!(run.ran().len(), 2, "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("refused the credentials").count(),
        1,
        "one warning, then no remote: {}",
        run.stderr
    );
    assert!(!run.stderr.contains(secret));
}

/// Debian's Apache with `mod_dav` serving a temporary directory over WebDAV on loopback,
/// stopped when dropped.
struct Dav {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Dav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const APACHE: &str = "/usr/sbin/apache2";
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

impl Dav {
    fn available() -> bool {
        std::path::Path::new(APACHE).is_file()
            && std::path::Path::new(APACHE_MODULES).join("mod_dav_fs.so").is_file()
    }

    fn start() -> Dav {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for d in [dir.path(), &www] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = dir.path().display();
        let m = APACHE_MODULES;
        let conf = format!(
            "ServerName 127.0.0.1\nListen 127.0.0.1:{port}\nPidFile {d}/httpd.pid\nErrorLog {d}/error.log\n\
             LoadModule mpm_event_module {m}/mod_mpm_event.so\nLoadModule authz_core_module {m}/mod_authz_core.so\n\
             LoadModule dav_module {m}/mod_dav.so\nLoadModule dav_fs_module {m}/mod_dav_fs.so\n\
             User nobody\nGroup nogroup\nDavLockDB {d}/davlock\nDocumentRoot {d}/www\nLimitRequestBody 0\n\
             <Directory {d}/www>\n  Dav On\n  DavDepthInfinity On\n  Require all granted\n</Directory>\n"
        );
        std::fs::write(dir.path().join("httpd.conf"), conf).unwrap();
        let child = std::process::Command::new(APACHE)
            .arg("-f")
            .arg(dir.path().join("httpd.conf"))
            .arg("-DFOREGROUND")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}/team/");
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed().as_secs() < 30, "Apache did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Dav { child, url, _dir: dir }
    }
}

/// Through a real WebDAV server (Apache `mod_dav`): push, a fresh workspace fetches instead of
/// running, a no-op push sends nothing, and a stopped server makes `pull` fail clearly.
#[test]
fn a_webdav_server_carries_the_cache_between_workspaces() {
    if !crate::support::system_part(
        "a WebDAV server (Debian's Apache with mod_dav)",
        Dav::available(),
        "`sudo apt-get install -y apache2`",
        "HONE_REQUIRE_WEBDAV",
    ) {
        return;
    }
    let dav = Dav::start();
    let a = ws();
    a.hone(&["run"]).ok();
    a.hone(&["cache", "push", "--remote", &dav.url]).ok().stdout_has("pushed 2 records");
    a.hone(&["cache", "push", "--remote", &dav.url]).ok().stdout_has("pushed 0 records");
    let b = ws();
    let run = b.hone(&["run", "--remote", &dav.url, "--json"]).ok();
    assert!(events(&run.stdout).iter().all(|e| e["event"] != "stage_started"), "{}", run.stdout);
    assert_eq!(
        a.hone(&["digest", ".hone/objects"]).stdout,
        b.hone(&["digest", ".hone/objects"]).stdout
    );
    // Above the multipart size: HTTP has no multipart upload, so one PUT of the mapped file.
    let big = "name: big\nstages:\n  big: { uses: command, with: { cmd: 'head -c 20000000 /dev/urandom > $HONE_OUT/w.bin' } }\n";
    let (c, d) = (Ws::new(), Ws::new());
    c.write("pipeline.yaml", big);
    d.write("pipeline.yaml", big);
    c.hone(&["run", "--push", "--remote", &dav.url]).ok();
    d.hone(&["cache", "pull", "big", "--remote", &dav.url]).ok().stdout_has("pulled 1 record");
    assert_eq!(
        c.hone(&["digest", ".hone/objects"]).stdout,
        d.hone(&["digest", ".hone/objects"]).stdout
    );
    let url = dav.url.clone();
    drop(dav);
    let e = ws();
    let out = e.hone(&["cache", "pull", "--remote", &url]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(e.objects(), 0);
}

/// Files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Starts `hone ARGS` in `ws`, waits until `ready()` holds, and kills it (SIGKILL): whether
/// it was still running then.
fn kill_when(ws: &Ws, args: &[&str], ready: impl Fn() -> bool) -> bool {
    let mut child = ws
        .cmd(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !ready() && t0.elapsed().as_secs() < 60 {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

/// A push killed while its object is uploading leaves no record on the remote (so no one
/// fetches half an object), and a pull killed while downloading leaves no record or object
/// in the store; both finish when run again.
#[test]
fn a_push_or_pull_killed_midway_leaves_nothing_half_visible() {
    let remote = tempfile::tempdir().unwrap();
    let url = remote.path().to_str().unwrap();
    let big = "name: big\nstages:\n  big: { uses: command, with: { cmd: 'head -c 400000000 /dev/zero > $HONE_OUT/w.bin' } }\n";
    let a = Ws::new();
    a.write("pipeline.yaml", big);
    a.hone(&["run"]).ok();
    let objects = remote.path().join("hone-v1/objects");
    let keys = remote.path().join("hone-v1/keys");
    let killed =
        kill_when(&a, &["cache", "push", "--remote", url], || !files_under(&objects).is_empty());
    eprintln!("KILLED push: {killed}");
    if killed {
        assert!(files_under(&keys).is_empty(), "a record is visible after a killed push");
        let b = Ws::new();
        b.write("pipeline.yaml", big);
        let out = b.hone(&["run", "--remote", url, "--json"]).ok();
        assert!(out.stdout.contains("stage_started"), "nothing to fetch: the stage runs");
    }
    a.hone(&["cache", "push", "--remote", url]).ok().stdout_has("pushed 1 record");

    let c = Ws::new();
    c.write("pipeline.yaml", big);
    let tmp = c.path().join(".hone/tmp");
    let big_enough =
        || files_under(&tmp).iter().any(|f| f.metadata().is_ok_and(|m| m.len() > 1 << 20));
    let killed_pull = kill_when(&c, &["cache", "pull", "--remote", url], big_enough);
    eprintln!("KILLED pull: {killed_pull}");
    if killed_pull {
        assert!(
            files_under(&c.path().join(".hone/keys")).is_empty(),
            "no record after a killed pull"
        );
        assert_eq!(c.objects(), 0, "no object after a killed pull");
    }
    c.hone(&["cache", "pull", "--remote", url]).ok().stdout_has("pulled 1 record");
    assert_eq!(
        a.hone(&["digest", ".hone/objects"]).stdout,
        c.hone(&["digest", ".hone/objects"]).stdout
    );
}
