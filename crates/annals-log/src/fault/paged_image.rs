//! A file's bytes as a run of shared, copy-on-write pages: the representation that makes a
//! [`super::FaultStorage`] sync and crash image cheap.
//!
//! The fault storage keeps two images of every file, what was written and what a crash would
//! leave. Copying a whole file from one to the other at every sync made the crash and model tests
//! spend most of their time in `memcpy`: a log segment is at least the 4 MiB the writer
//! preallocates. Here a sync (and a crash image) copies page references instead, and a write
//! copies only the pages it changes that the other image still shares.
//!
//! Two images hold the same page (`Arc::ptr_eq`) only if its bytes are equal: a page is changed
//! only through [`Arc::make_mut`], which copies it first whenever anything else holds it. So a sync
//! needs no record of what changed: it takes exactly the pages that are not shared.

use std::sync::{Arc, LazyLock};

/// Bytes in one page. Small enough that the first write to a page after a sync copies little,
/// large enough that a sync walks few pages (256 for a 4 MiB segment).
pub(super) const PAGE_BYTES: usize = 16 * 1024;

type Page = Arc<[u8; PAGE_BYTES]>;

/// One page of zeros that every image shares until it writes to it, so growing a file costs no
/// allocation. The static keeps a reference, so `make_mut` never writes to it in place.
static ZERO_PAGE: LazyLock<Page> = LazyLock::new(|| Arc::new([0u8; PAGE_BYTES]));

/// The bytes of one file.
///
/// Invariants: `pages.len() == len.div_ceil(PAGE_BYTES)`, and the bytes of the last page past
/// `len` are zero, so growing the file only has to add pages.
#[derive(Clone, Default)]
pub(super) struct PagedImage {
    pages: Vec<Page>,
    len: usize,
}

impl PagedImage {
    pub(super) fn from_bytes(bytes: &[u8]) -> Self {
        let mut image = Self::default();
        image.write(bytes, 0);
        image
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pages.len() * PAGE_BYTES);
        for page in &self.pages {
            out.extend_from_slice(page.as_slice());
        }
        out.truncate(self.len);
        out
    }

    /// Fills `buf` from `start`; `false` (and `buf` untouched) if that passes the end.
    pub(super) fn read(&self, buf: &mut [u8], start: usize) -> bool {
        let Some(end) = start.checked_add(buf.len()).filter(|&end| end <= self.len) else {
            return false;
        };
        let mut at = start;
        let mut filled = 0;
        while at < end {
            let (page, offset) = (at / PAGE_BYTES, at % PAGE_BYTES);
            let n = (end - at).min(PAGE_BYTES - offset);
            let (Some(src), Some(dst)) = (
                self.pages.get(page).and_then(|p| p.get(offset..offset + n)),
                buf.get_mut(filled..filled + n),
            ) else {
                return false;
            };
            dst.copy_from_slice(src);
            at += n;
            filled += n;
        }
        true
    }

    /// Writes all of `buf` at `start`, growing the image with zeros first if it ends past the
    /// end (an empty write past the end grows it too, as `pwrite` does).
    pub(super) fn write(&mut self, buf: &[u8], start: usize) {
        let end = start.saturating_add(buf.len());
        if end > self.len {
            self.set_len(end);
        }
        let mut at = start;
        let mut taken = 0;
        while at < end {
            let (page, offset) = (at / PAGE_BYTES, at % PAGE_BYTES);
            let n = (end - at).min(PAGE_BYTES - offset);
            if let (Some(page), Some(src)) = (self.pages.get_mut(page), buf.get(taken..taken + n))
                // Zeros written over the zero page change nothing: the log's preallocation
                // writes megabytes of them, which would otherwise each copy a page.
                && !(Arc::ptr_eq(page, &ZERO_PAGE) && ZERO_PAGE.get(offset..offset + n) == Some(src))
                && let Some(dst) = Arc::make_mut(page).get_mut(offset..offset + n)
            {
                dst.copy_from_slice(src);
            }
            at += n;
            taken += n;
        }
    }

    /// Truncates, or extends with zeros, to `len` bytes.
    pub(super) fn set_len(&mut self, len: usize) {
        let pages = len.div_ceil(PAGE_BYTES);
        if len < self.len {
            self.pages.truncate(pages);
            // Keep the bytes past the end zero, so a later extension reads zeros there.
            let offset = len % PAGE_BYTES;
            if offset != 0
                && let Some(page) = self.pages.last_mut()
                && page.get(offset..) != ZERO_PAGE.get(offset..)
                && let Some(tail) = Arc::make_mut(page).get_mut(offset..)
            {
                tail.fill(0);
            }
        } else {
            self.pages.resize_with(pages, || Arc::clone(&ZERO_PAGE));
        }
        self.len = len;
    }

    /// Makes this image equal to `other`, taking only the pages it does not share yet.
    pub(super) fn assign_from(&mut self, other: &PagedImage) {
        self.pages.truncate(other.pages.len());
        for (mine, theirs) in self.pages.iter_mut().zip(&other.pages) {
            if !Arc::ptr_eq(mine, theirs) {
                *mine = Arc::clone(theirs);
            }
        }
        let have = self.pages.len();
        self.pages
            .extend(other.pages.iter().skip(have).map(Arc::clone));
        self.len = other.len;
    }

    /// Pages this image shares with `other` at the same place (for tests of the copy-on-write).
    #[cfg(test)]
    pub(super) fn shared_pages(&self, other: &PagedImage) -> usize {
        self.pages
            .iter()
            .zip(&other.pages)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_and_lengths_match_a_plain_vec() {
        let mut image = PagedImage::default();
        let mut plain: Vec<u8> = Vec::new();
        // A small linear congruential generator: the same operations in every run.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |bound: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % bound
        };
        for step in 0..2_000u32 {
            match next(10) {
                0..=5 => {
                    let start = next(3 * PAGE_BYTES + 100);
                    let len = next(2 * PAGE_BYTES + 10);
                    let fill = (step % 251) as u8 + 1;
                    let buf = vec![fill; len];
                    image.write(&buf, start);
                    if plain.len() < start + len {
                        plain.resize(start + len, 0);
                    }
                    plain[start..start + len].copy_from_slice(&buf);
                }
                6 | 7 => {
                    let len = next(3 * PAGE_BYTES + 100);
                    image.set_len(len);
                    plain.resize(len, 0);
                }
                _ => {
                    let start = next(plain.len() + 10);
                    let len = next(PAGE_BYTES + 10);
                    let mut buf = vec![0u8; len];
                    let ok = image.read(&mut buf, start);
                    assert_eq!(ok, start + len <= plain.len(), "step {step}");
                    if ok {
                        assert_eq!(buf, plain[start..start + len], "step {step}");
                    }
                }
            }
            assert_eq!(image.len(), plain.len(), "step {step}");
            assert_eq!(image.to_vec(), plain, "step {step}");
        }
    }

    #[test]
    fn assigning_shares_pages_and_writes_copy_only_what_they_touch() {
        let mut current = PagedImage::from_bytes(&vec![7u8; 4 * PAGE_BYTES]);
        let mut durable = PagedImage::default();
        durable.assign_from(&current);
        assert_eq!(durable.shared_pages(&current), 4);
        current.write(b"x", PAGE_BYTES + 3);
        assert_eq!(durable.shared_pages(&current), 3);
        assert_eq!(durable.to_vec(), vec![7u8; 4 * PAGE_BYTES]);
        durable.assign_from(&current);
        assert_eq!(durable.to_vec(), current.to_vec());
        assert_eq!(durable.shared_pages(&current), 4);
    }

    #[test]
    fn zeros_written_past_the_end_share_the_zero_page() {
        let mut image = PagedImage::from_bytes(b"data");
        image.write(&vec![0u8; 3 * PAGE_BYTES], 10);
        let zero_pages = image
            .pages
            .iter()
            .filter(|p| Arc::ptr_eq(p, &ZERO_PAGE))
            .count();
        assert_eq!(zero_pages, 3);
        let mut expected = b"data".to_vec();
        expected.resize(10 + 3 * PAGE_BYTES, 0);
        assert_eq!(image.to_vec(), expected);
        // A non-zero byte written into a zero page takes a page of its own.
        image.write(b"x", 2 * PAGE_BYTES);
        expected[2 * PAGE_BYTES] = b'x';
        assert_eq!(image.to_vec(), expected);
        assert_eq!(ZERO_PAGE.iter().filter(|&&b| b != 0).count(), 0);
    }
}
