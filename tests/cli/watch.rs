//! `hone watch`: reruns what a change affects, and survives a broken pipeline file. (Runs the
//! README's `hone watch` as written: in a directory with a `pipeline.yaml`.)

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::Ws;

struct Watching {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watching {
    fn start(ws: &Ws) -> Watching {
        let mut child = ws.cmd(&["watch"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Watching { child, lines, seen: Vec::new() }
    }

    /// Wait for a line containing `s`; returns the lines read until then.
    #[track_caller]
    fn until(&mut self, s: &str) -> Vec<String> {
        let t = Instant::now();
        let mut got = Vec::new();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(l.clone());
                let hit = l.contains(s);
                got.push(l);
                if hit {
                    return got;
                }
            }
        }
        panic!("no line with {s:?}; saw:\n{}", self.seen.join("\n"));
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_reruns_affected_stages_and_survives_a_broken_file() {
    let ws = Ws::new();
    let yaml = "stages:\n  a:\n    uses: command\n    with: { cmd: \"cat a.txt > $HONE_OUT/a\", deps: [a.txt] }\n  b:\n    uses: command\n    with: { cmd: \"cat b.txt > $HONE_OUT/b\", deps: [b.txt] }\n";
    ws.write("pipeline.yaml", yaml).write("a.txt", "1").write("b.txt", "1");
    let mut w = Watching::start(&ws);
    w.until("hone: watching");
    std::thread::sleep(Duration::from_millis(200));
    ws.write("a.txt", "2");
    let lines = w.until("hone: watching");
    let text = lines.join("\n");
    assert!(text.contains("changed: ") && text.contains("a.txt"), "{text}");
    assert!(text.contains("  ran     a") && text.contains("  cached  b"), "{text}");

    // A broken pipeline file is reported, and watching goes on.
    ws.write("pipeline.yaml", "stages:\n  a: { uses: comand }\n");
    w.until("unknown stage kind `comand`");
    w.until("hone: watching 1 path(s)");
    ws.write("pipeline.yaml", yaml);
    let text = w.until("hone: watching").join("\n");
    assert!(text.contains("  cached  a") && text.contains("  cached  b"), "{text}");
}
