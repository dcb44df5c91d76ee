//! Who is in flight, for the report: a request's method and path prefix,
//! written into its counter slot with plain stores before the slot is
//! claimed, and read back (seqlock-style) only when the report names the
//! stragglers. Nothing here allocates or reads a clock on the serving path.

use std::borrow::Cow;

use crate::core::sync::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

#[cfg(not(tower_graceful_loom))]
const PATH_WORDS: usize = 6;
#[cfg(tower_graceful_loom)]
const PATH_WORDS: usize = 1;
/// The longest path prefix a slot keeps.
pub(crate) const PATH_CAP: usize = PATH_WORDS * 8;

/// `since` bit: the time is the trigger's, a lower bound of the real start.
pub(crate) const BEFORE_TRIGGER: u64 = 1 << 63;

/// What names a request in its slot, read out of the request: the method as
/// a number, so that nothing holds a reference into the request (which lets
/// the caller move it into the inner service without a copy).
#[derive(Clone, Copy)]
pub(crate) struct Name<'p> {
    /// The method, packed (see [`pack8`]).
    method: u64,
    path: &'p str,
}

impl<'p> Name<'p> {
    #[inline]
    pub(crate) fn of(method: &http::Method, path: &'p str) -> Self {
        // GET without the table lookup `as_str` is.
        let method = if *method == http::Method::GET {
            GET_PACKED
        } else {
            pack8(method.as_str().as_bytes())
        };
        Self { method, path }
    }

    /// The request's path.
    #[inline]
    pub(crate) fn path(&self) -> &'p str {
        self.path
    }
}

/// The name fields of one counter slot. Written only by the thread that owns
/// the slot's shard, while the slot is free; read by the report while live.
pub(crate) struct SlotName {
    method: AtomicU64,
    /// Path length in the low 16 bits, bit 16 set when truncated.
    meta: AtomicU64,
    path: [AtomicU64; PATH_WORDS],
    /// Nanoseconds since the tracker's epoch + 1; 0 = not stamped yet.
    pub(crate) since: AtomicU64,
}

impl SlotName {
    pub(crate) fn new() -> Self {
        Self {
            method: AtomicU64::new(0),
            meta: AtomicU64::new(0),
            path: std::array::from_fn(|_| AtomicU64::new(0)),
            since: AtomicU64::new(0),
        }
    }

    /// Writes `name` (the caller fenced before, and claims the slot after).
    #[inline]
    pub(crate) fn write(&self, name: Name<'_>, since: u64) {
        self.method.store(name.method, Relaxed);
        let bytes = name.path.as_bytes();
        let len = bytes.len().min(PATH_CAP);
        let mut chunks = bytes[..len].chunks(8);
        for w in self.path.iter() {
            match chunks.next() {
                Some(c) => w.store(pack8(c), Relaxed),
                None => break,
            }
        }
        self.meta
            .store(len as u64 | (u64::from(len < bytes.len()) << 16), Relaxed);
        self.since.store(since, Relaxed);
    }

    /// Reads the name back: the method, the path prefix (with `…` when it
    /// was cut) and the raw `since`. The caller checks afterwards that the
    /// slot was not reused meanwhile.
    pub(crate) fn read(&self) -> (String, String, u64) {
        let method = unpack(&[self.method.load(Relaxed)]);
        let meta = self.meta.load(Relaxed);
        let words: Vec<u64> = self.path.iter().map(|w| w.load(Relaxed)).collect();
        let since = self.since.load(Relaxed);
        let mut path = decode_path(&words, (meta & 0xffff) as usize);
        if meta & (1 << 16) != 0 {
            path.push('…');
        }
        (method, path, since)
    }
}

/// What an in-flight entry is, for the straggler list.
#[derive(Clone, Debug)]
pub(crate) enum LiveKind {
    Request {
        method: String,
        path: String,
    },
    Task {
        name: Cow<'static, str>,
    },
    Unnamed {
        count: usize,
    },
    /// HTTP/2 connections whose GOAWAY exchange was not over (holds).
    Connections {
        count: usize,
    },
}

/// A live entry at the moment of a snapshot.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    pub(crate) kind: LiveKind,
    /// When it started, if known; `lower_bound` when it is the trigger time.
    pub(crate) since: Option<tokio::time::Instant>,
    pub(crate) lower_bound: bool,
}

/// `pack8(b"GET")`.
const GET_PACKED: u64 = u64::from_le_bytes(*b"GET\0\0\0\0\0");

/// Up to 8 bytes, little-endian, zero-padded; without a call to `memcpy`.
#[inline]
fn pack8(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 8 {
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    } else if n >= 4 {
        // Two overlapping 4-byte reads; the overlap holds the same bytes.
        let lo = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let hi = u64::from(u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]));
        lo | (hi << ((n - 4) * 8))
    } else if n >= 2 {
        let lo = u64::from(u16::from_le_bytes([b[0], b[1]]));
        let hi = u64::from(u16::from_le_bytes([b[n - 2], b[n - 1]]));
        lo | (hi << ((n - 2) * 8))
    } else if n == 1 {
        u64::from(b[0])
    } else {
        0
    }
}

/// The stored prefix may end inside a character (it is cut by bytes, for
/// speed): keep the valid part.
fn decode_path(words: &[u64], len: usize) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let b = &bytes[..len.min(bytes.len())];
    let valid = match std::str::from_utf8(b) {
        Ok(_) => b.len(),
        Err(e) => e.valid_up_to(),
    };
    String::from_utf8_lossy(&b[..valid]).into_owned()
}

fn unpack(words: &[u64]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(all(test, not(tower_graceful_loom)))]
mod tests {
    use super::*;

    #[test]
    fn get_is_packed_as_every_other_method_is() {
        assert_eq!(Name::of(&http::Method::GET, "/").method, pack8(b"GET"));
        for m in [
            http::Method::POST,
            http::Method::HEAD,
            http::Method::from_bytes(b"GETS").unwrap(),
        ] {
            assert_eq!(Name::of(&m, "/").method, pack8(m.as_str().as_bytes()));
        }
    }

    #[test]
    fn a_long_path_is_cut_on_a_character_boundary_and_marked() {
        let slot = SlotName::new();
        let long = format!("/{}", "é".repeat(40));
        slot.write(Name::of(&http::Method::POST, &long), 0);
        let (method, path, since) = slot.read();
        assert_eq!(method, "POST");
        assert!(path.ends_with('…'), "{path}");
        assert!(path.len() <= PATH_CAP + '…'.len_utf8());
        assert!(long.starts_with(path.trim_end_matches('…')));
        assert_eq!(since, 0);
    }
}
