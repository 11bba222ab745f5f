//! SHA-256 and byte counts of what streams through, on the way into a store (backup)
//! or out of it (verify-backup).

use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Lowercase hex of a finished hash.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes and counts every byte written through it.
pub struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }

    /// (sha256 hex, bytes)
    pub fn finish(self) -> (String, u64, W) {
        (hex(&self.hash.finalize()), self.count, self.inner)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for HashingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            let n = *n;
            self.hash.update(&buf[..n]);
            self.count += n as u64;
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Hashes every byte read through it; the result is shared so it can be read after
/// the reader was handed on.
pub struct HashingReader<R> {
    inner: R,
    state: std::sync::Arc<std::sync::Mutex<(Sha256, u64)>>,
}

/// The other end of a `HashingReader`.
#[derive(Clone)]
pub struct ReadDigest(std::sync::Arc<std::sync::Mutex<(Sha256, u64)>>);

impl ReadDigest {
    /// (sha256 hex, bytes) of what was read so far.
    pub fn snapshot(&self) -> (String, u64) {
        let guard = self.0.lock().expect("digest lock");
        (hex(&guard.0.clone().finalize()), guard.1)
    }
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> (Self, ReadDigest) {
        let state = std::sync::Arc::new(std::sync::Mutex::new((Sha256::new(), 0)));
        (
            Self {
                inner,
                state: state.clone(),
            },
            ReadDigest(state),
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            let mut guard = self.state.lock().expect("digest lock");
            guard.0.update(new);
            guard.1 += new.len() as u64;
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn both_ways_agree_with_the_known_digest() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").await.unwrap();
        let (hex_w, n, inner) = w.finish();
        assert_eq!(
            hex_w,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(n, 3);
        let (mut r, digest) = HashingReader::new(std::io::Cursor::new(inner));
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(digest.snapshot(), (hex_w, 3));
    }
}
