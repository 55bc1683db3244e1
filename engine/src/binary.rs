//! The little binary encoding of the store's records and of kept plans: little-endian numbers
//! and length-prefixed strings, read back with [`Reader`]. Several times faster to decode than
//! JSON, which matters where a rerun decodes one item per task instance. Every reader returns
//! `None` on bytes that end early or are not UTF-8; callers turn that into their own error.

pub fn put_str(b: &mut Vec<u8>, s: &str) {
    put_u32(b, s.len() as u32);
    b.extend_from_slice(s.as_bytes());
}

pub fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

pub fn put_f64(b: &mut Vec<u8>, v: f64) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// Reads what the `put_*` functions wrote, front to back.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }
    pub fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.array()?))
    }
    pub fn str(&mut self) -> Option<String> {
        self.str_ref().map(str::to_owned)
    }
    /// A string borrowed from the bytes (for what is only looked at, not kept).
    pub fn str_ref(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    pub fn skip_str(&mut self) -> Option<()> {
        let n = self.u32()? as usize;
        self.take(n).map(|_| ())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_put_reads_back_and_short_bytes_are_none() {
        let mut b = Vec::new();
        put_str(&mut b, "t1");
        put_u32(&mut b, 7);
        put_u64(&mut b, u64::MAX);
        put_f64(&mut b, 2.5);
        b.push(3);
        let mut r = Reader(&b);
        assert_eq!(r.str().as_deref(), Some("t1"));
        assert_eq!(r.u32(), Some(7));
        assert_eq!(r.u64(), Some(u64::MAX));
        assert_eq!(r.f64(), Some(2.5));
        assert_eq!(r.u8(), Some(3));
        assert!(r.is_empty());
        assert_eq!(r.u8(), None);
        // A length that runs past the end.
        assert_eq!(Reader(&[9, 0, 0, 0, b'a']).str(), None);
        assert_eq!(Reader(&[2, 0, 0, 0, 0xff, 0xfe]).str(), None);
    }
}
