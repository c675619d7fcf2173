//! Segment files: the log is a run of files, each starting with a 64-byte header and holding whole
//! commit records. A record never spans two segments.
//!
//! Addresses are global byte offsets into the concatenated log: a segment's file name is its base
//! address (20 decimal digits, `.seg`), and the next segment's base is this one's base plus its
//! length, so an address names one byte in one file.
//!
//! ```text
//! segment header (64 bytes)
//!   0  [u8; 8] magic "ANNALSEG"
//!   8  u32     format version (1)
//!   12 u32     reserved, zero
//!   16 u64     base address
//!   24 u32     CRC-32C of bytes 0..24
//!   28 [u8; 36] zero
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::storage::StorageFile;

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"ANNALSEG";
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// The on-disk format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// What every segment file's name ends with.
pub const SEGMENT_SUFFIX: &str = ".seg";

pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn encode_header(base: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a header read from disk; returns why it is not valid.
pub(crate) fn check_header(h: &[u8], base: u64) -> Result<(), String> {
    let field = |r: std::ops::Range<usize>| h.get(r).unwrap_or_default();
    if field(0..8) != SEGMENT_MAGIC {
        return Err("bad segment magic".to_owned());
    }
    let crc = u32::from_le_bytes(field(24..28).try_into().unwrap_or_default());
    if crc != crc32c::crc32c(field(0..24)) {
        return Err("segment header checksum mismatch".to_owned());
    }
    let version = u32::from_le_bytes(field(8..12).try_into().unwrap_or_default());
    if version != FORMAT_VERSION {
        return Err(format!(
            "segment format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    let stored = u64::from_le_bytes(field(16..24).try_into().unwrap_or_default());
    if stored != base {
        return Err(format!("header names base {stored}, file name says {base}"));
    }
    Ok(())
}

/// One open segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) name: String,
    pub(crate) file: Arc<dyn StorageFile>,
    /// Address one past the last byte written to this segment.
    end: AtomicU64,
}

impl Segment {
    pub(crate) fn new(base: u64, name: String, file: Arc<dyn StorageFile>, end: u64) -> Self {
        Self {
            base,
            name,
            file,
            end: AtomicU64::new(end),
        }
    }

    pub(crate) fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    pub(crate) fn set_end(&self, end: u64) {
        self.end.store(end, Ordering::Release);
    }

    pub(crate) fn first_record(&self) -> u64 {
        self.base + SEGMENT_HEADER_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(12345)), Some(12345));
        assert_eq!(parse_segment_name("index.redb"), None);
        assert_eq!(parse_segment_name("123.seg"), None);
    }

    #[test]
    fn header_checks() {
        let h = encode_header(4096);
        assert!(check_header(&h, 4096).is_ok());
        assert!(check_header(&h, 0).is_err());
        let mut bad = h;
        bad[17] ^= 1;
        assert!(check_header(&bad, 4096).is_err());
        assert!(check_header(&[0u8; 64], 0).is_err());
    }
}
