//! The consumer's copies of the records' raw bytes, made in shared chunks.
//!
//! Every record keeps its key and value, in case the database refuses the row and it must be
//! quarantined byte for byte. One allocation per message (about 1 KB, above the allocator's
//! thread cache, and freed on a writer's thread) showed in a profile of the consumer thread
//! during a catch-up. Here the bytes are appended to a 64 KiB chunk and each
//! record holds a reference-counted slice of it; a chunk is freed when its last record is.

use bytes::{Bytes, BytesMut};

/// Bytes per chunk: about 50 records of a WeatherAPI payload. It is also the most a record kept
/// longer than its neighbours (a rejection waiting for the dead-letter topic) holds on to.
const CHUNK_BYTES: usize = 64 * 1024;

/// The chunk being filled.
#[derive(Default)]
pub(super) struct Arena {
    free: BytesMut,
}

impl Arena {
    /// A copy of `bytes`, in the current chunk or in a new one when it does not fit; a message
    /// larger than a chunk gets a chunk of its own size.
    pub(super) fn copy(&mut self, bytes: &[u8]) -> Bytes {
        if self.free.capacity() < bytes.len() {
            self.free = BytesMut::with_capacity(CHUNK_BYTES.max(bytes.len()));
        }
        self.free.extend_from_slice(bytes);
        self.free.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_equal_to_their_source_and_share_a_chunk_until_it_is_full() {
        let mut arena = Arena::default();
        let a = arena.copy(b"first message");
        let b = arena.copy(b"");
        let c = arena.copy(b"second");
        assert_eq!(
            (&a[..], &b[..], &c[..]),
            (&b"first message"[..], &b""[..], &b"second"[..])
        );
        // The same chunk: c starts where a ends.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), c.as_ptr());
        let big = vec![7u8; CHUNK_BYTES + 1];
        let d = arena.copy(&big);
        assert_eq!(&d[..], &big[..]);
        let e = arena.copy(b"after");
        assert_eq!(&e[..], b"after");
        drop((a, b, c, d));
        assert_eq!(&e[..], b"after", "a slice outlives the others of its chunk");
    }
}
