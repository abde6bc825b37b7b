//! Per-invocation capture of stdout and stderr: both streams write into one
//! bounded buffer; bytes past the bound are dropped and the truncation is
//! marked, never an error the guest sees.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    truncated: bool,
}

#[derive(Clone)]
pub struct LogCapture {
    state: Arc<Mutex<State>>,
    cap: usize,
}

impl LogCapture {
    pub fn new(cap: usize) -> Self {
        Self {
            state: Arc::default(),
            cap,
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.cap.saturating_sub(s.buf.len());
        if bytes.len() > room {
            s.truncated = true;
        }
        let n = bytes.len().min(room);
        s.buf.extend_from_slice(&bytes[..n]);
    }

    /// Adds a line from the host (e.g. a policy denial) to the logs.
    pub fn note(&self, line: &str) {
        self.push(line.as_bytes());
    }

    /// The captured text (lossy UTF-8) and whether some was dropped.
    pub fn take(&self) -> (String, bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let buf = std::mem::take(&mut s.buf);
        (String::from_utf8_lossy(&buf).into_owned(), s.truncated)
    }
}

impl IsTerminal for LogCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogCapture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogCapture {
    async fn ready(&mut self) {}
}

impl OutputStream for LogCapture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept: what does not fit is dropped and marked.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LogCapture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_marked() {
        let mut c = LogCapture::new(10);
        c.write(Bytes::from_static(b"hello ")).unwrap();
        c.write(Bytes::from_static(b"world!!")).unwrap();
        let (text, truncated) = c.take();
        assert_eq!(text, "hello worl");
        assert!(truncated);
    }
}
