//! The sandbox a plugin instance runs in ([`Sandbox`], the wasmtime store's data) and the
//! [`linker`] that decides what it may import.
//!
//! Granted: `wasi:cli` (no args, no environment, empty stdin, stdout/stderr captured into a
//! bounded buffer), `wasi:io`, `wasi:random` (a fixed-seed stream, so `HashMap` works and
//! runs are reproducible) and hone's `log`. Never granted, so a component importing them fails
//! at load with [`crate::PluginError::ForbiddenImport`]: `wasi:filesystem`, `wasi:sockets` and
//! `wasi:clocks` (a clock would make verdicts time-dependent, and a sleep would block the host
//! thread where fuel cannot stop it). Memory is bounded by [`MemoryLimiter`], CPU by fuel.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli};
use wasmtime_wasi::p2::bindings::sync as wasi_sync;
use wasmtime_wasi::p2::bindings::{cli, random};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::hone::filter::log;

/// WASI interface prefixes hone refuses to link.
pub(crate) const FORBIDDEN: &[&str] = &["wasi:filesystem/", "wasi:sockets/", "wasi:clocks/"];

/// How much guest stdout/stderr one call keeps (the tail; older bytes are dropped).
const CAPTURE_BYTES: usize = 8 * 1024;

/// The longest log message passed on to `tracing`.
const LOG_BYTES: usize = 4 * 1024;

/// A store's data: the WASI context (granting nothing), the memory limiter and the
/// captured output.
pub(crate) struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) output: Captured,
    plugin: Arc<str>,
}

impl Sandbox {
    pub(crate) fn new(plugin: Arc<str>, memory_bytes: u64) -> Sandbox {
        let output = Captured::default();
        let wasi = WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .secure_random(SeededRng::new(b"hone plugin secure random"))
            .insecure_random(SeededRng::new(b"hone plugin insecure random"))
            .insecure_random_seed(0x686f_6e65_5f70_6c75_6769_6e5f_7365_6564)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Sandbox {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter { limit: memory_bytes, denied: None },
            output,
            plugin,
        }
    }

    pub(crate) fn set_plugin(&mut self, plugin: Arc<str>) {
        self.plugin = plugin;
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl log::Host for Sandbox {
    fn log(&mut self, level: log::Level, message: String) {
        let mut message = message;
        if message.len() > LOG_BYTES {
            let mut cut = LOG_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &*self.plugin;
        match level {
            log::Level::Error => tracing::error!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
        }
    }
}

/// The linker every plugin is instantiated with: exactly the grants listed in the module doc.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<Sandbox>> {
    let mut l = Linker::<Sandbox>::new(engine);
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<Sandbox, HasSelf<ResourceTable>>(
        &mut l,
        |s| &mut s.table,
    )?;
    wasi_sync::io::poll::add_to_linker::<Sandbox, HasSelf<ResourceTable>>(&mut l, |s| {
        &mut s.table
    })?;
    wasi_sync::io::streams::add_to_linker::<Sandbox, HasSelf<ResourceTable>>(&mut l, |s| {
        &mut s.table
    })?;
    random::random::add_to_linker::<Sandbox, WasiRandom>(&mut l, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<Sandbox, WasiRandom>(&mut l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<Sandbox, WasiRandom>(&mut l, |s| s.wasi.random())?;
    use wasmtime_wasi::cli::WasiCliView as _;
    cli::exit::add_to_linker::<Sandbox, WasiCli>(&mut l, Sandbox::cli)?;
    cli::environment::add_to_linker::<Sandbox, WasiCli>(&mut l, Sandbox::cli)?;
    cli::stdin::add_to_linker::<Sandbox, WasiCli>(&mut l, Sandbox::cli)?;
    cli::stdout::add_to_linker::<Sandbox, WasiCli>(&mut l, Sandbox::cli)?;
    cli::stderr::add_to_linker::<Sandbox, WasiCli>(&mut l, Sandbox::cli)?;
    cli::terminal_input::add_to_linker::<Sandbox, WasiCli>(&mut l, Sandbox::cli)?;
    cli::terminal_output::add_to_linker::<Sandbox, WasiCli>(&mut l, Sandbox::cli)?;
    cli::terminal_stdin::add_to_linker::<Sandbox, WasiCli>(&mut l, Sandbox::cli)?;
    cli::terminal_stdout::add_to_linker::<Sandbox, WasiCli>(&mut l, Sandbox::cli)?;
    cli::terminal_stderr::add_to_linker::<Sandbox, WasiCli>(&mut l, Sandbox::cli)?;
    log::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut l, |s| s)?;
    Ok(l)
}

/// Bounds each linear memory of an instance; remembers a refused growth so the host can
/// report it as a memory-limit error rather than a bare trap.
pub(crate) struct MemoryLimiter {
    limit: u64,
    pub(crate) denied: Option<u64>,
}

impl MemoryLimiter {
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.denied = Some(desired as u64);
            // An error (not `Ok(false)`) traps at once: a Rust guest would otherwise abort
            // on allocation failure with a less telling message.
            wasmtime::bail!("memory limit of {} bytes reached", self.limit);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The guest's stdout and stderr: the last [`CAPTURE_BYTES`] written, shared by both.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<VecDeque<u8>>>);

impl Captured {
    /// Everything captured since the last call, as text.
    pub(crate) fn take(&self) -> String {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if buf.is_empty() {
            return String::new();
        }
        let bytes: Vec<u8> = buf.drain(..).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = &bytes[bytes.len().saturating_sub(CAPTURE_BYTES)..];
        let over = (buf.len() + bytes.len()).saturating_sub(CAPTURE_BYTES);
        buf.drain(..over);
        buf.extend(bytes);
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Never full: old output is dropped instead, so a chatty plugin cannot trap on it.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A fixed-seed random stream (blake3 in XOF mode): plugins that hash or sample get the same
/// bytes on every run and every machine, so their verdicts are reproducible.
struct SeededRng(blake3::OutputReader);

impl SeededRng {
    fn new(seed: &[u8]) -> SeededRng {
        SeededRng(blake3::Hasher::new().update(seed).finalize_xof())
    }
}

impl rand_core::TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}
