//! Reads the property stream straight out of the TransferBuffer frames that carry it, so a value split
//! across frames reads as one, nothing is copied but the values asked for, and every position is known as
//! a byte offset in the whole item stream.

/// A position in the property stream, which is the TransferBuffer payloads read one after another.
pub(crate) struct Cursor<'a> {
    /// The payloads, each with the stream offset of its first byte; none is empty (`check` refuses
    /// empty TransferBuffers), which keeps `index` on a byte whenever bytes remain.
    buffers: Vec<(usize, &'a [u8])>,
    /// The buffer holding the next byte.
    index: usize,
    /// The next byte's position in that buffer.
    at: usize,
    /// Bytes left in the property stream.
    remaining: usize,
    /// The stream offset just past the property stream's last byte.
    end: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buffers` (as `frames::transfer_buffers` gives them).
    pub(crate) fn new(buffers: Vec<(usize, &'a [u8])>) -> Cursor<'a> {
        let buffers: Vec<_> = buffers.into_iter().filter(|(_, b)| !b.is_empty()).collect();
        let remaining = buffers.iter().map(|(_, b)| b.len()).sum();
        let end = buffers.last().map_or(0, |(start, b)| start + b.len());
        Cursor {
            buffers,
            index: 0,
            at: 0,
            remaining,
            end,
        }
    }

    /// The offset in the item stream of the next byte (of the end, when none is left).
    pub(crate) fn offset(&self) -> usize {
        self.buffers
            .get(self.index)
            .map_or(self.end, |(start, _)| start + self.at)
    }

    /// Bytes left in the property stream.
    pub(crate) fn remaining(&self) -> usize {
        self.remaining
    }

    /// Fills `out` from the stream, or reads nothing and answers false when fewer bytes remain.
    pub(crate) fn read(&mut self, out: &mut [u8]) -> bool {
        if out.len() > self.remaining {
            return false;
        }
        let mut filled = 0;
        while filled < out.len() {
            let piece = self.next_piece(out.len() - filled);
            out[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
        }
        true
    }

    /// `N` bytes, or `None` (reading nothing) when fewer remain.
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut out = [0; N];
        self.read(&mut out).then_some(out)
    }

    /// Moves past `len` bytes, or answers false (moving nowhere) when fewer remain.
    pub(crate) fn skip(&mut self, len: usize) -> bool {
        if len > self.remaining {
            return false;
        }
        let mut left = len;
        while left > 0 {
            left -= self.next_piece(left).len();
        }
        true
    }

    /// The next `len` bytes as a vector, or `None` (reading nothing) when fewer remain. The check comes
    /// before the allocation, so a declared length never allocates more than the stream holds.
    pub(crate) fn bytes(&mut self, len: usize) -> Option<Vec<u8>> {
        if len > self.remaining {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let piece = self.next_piece(len - out.len());
            out.extend_from_slice(piece);
        }
        Some(out)
    }

    /// Up to `most` bytes (at least one) from the current buffer, moving past them. Callers have made
    /// sure that bytes remain.
    fn next_piece(&mut self, most: usize) -> &'a [u8] {
        let (_, buffer) = self.buffers[self.index];
        let piece = &buffer[self.at..buffer.len().min(self.at + most)];
        self.at += piece.len();
        self.remaining -= piece.len();
        if self.at == buffer.len() {
            self.index += 1;
            self.at = 0;
        }
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_run_across_buffers_and_offsets_are_those_of_the_stream() {
        let mut cursor = Cursor::new(vec![(10, b"abc".as_slice()), (21, b"defg".as_slice())]);
        assert_eq!(cursor.offset(), 10);
        assert_eq!(cursor.array::<2>(), Some(*b"ab"));
        assert_eq!(cursor.offset(), 12);
        assert_eq!(cursor.bytes(3).as_deref(), Some(b"cde".as_slice()));
        assert_eq!(cursor.offset(), 23);
        assert!(cursor.skip(1));
        assert_eq!(cursor.remaining(), 1);
        assert_eq!(cursor.array::<2>(), None, "too few bytes: nothing read");
        assert_eq!(cursor.offset(), 24);
        assert_eq!(cursor.array::<1>(), Some(*b"g"));
        assert_eq!(cursor.offset(), 25, "the end is just past the last byte");
    }

    #[test]
    fn a_length_beyond_what_remains_reads_and_allocates_nothing() {
        let mut cursor = Cursor::new(vec![(0, b"abc".as_slice())]);
        assert_eq!(cursor.bytes(usize::MAX), None);
        assert!(!cursor.skip(4));
        assert_eq!(cursor.remaining(), 3);
        assert_eq!(cursor.offset(), 0);
    }
}
