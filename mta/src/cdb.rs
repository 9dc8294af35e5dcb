//! Constant databases (D. J. Bernstein's cdb format, what qmail-newu writes to `users/cdb`):
//! built in memory, read with a few positioned reads per lookup through the environment's
//! filesystem, so a large table costs neither memory nor a parse.
//!
//! Layout: 256 (position, slots) pairs of the hash tables, the records (key length, data
//! length, key, data), then the tables of (hash, record position) slots; all numbers are
//! 32-bit little-endian. A key's hash picks the table (low 8 bits) and the first slot to
//! probe (the rest); an empty slot (position 0) ends the search.

use std::io;

use crate::env::FsFile;

const HEADER: usize = 2048;

/// The cdb hash of a key.
pub fn hash(key: &[u8]) -> u32 {
    key.iter().fold(5381u32, |h, &c| {
        (h.wrapping_shl(5).wrapping_add(h)) ^ u32::from(c)
    })
}

fn put(out: &mut Vec<u8>, n: usize) -> io::Result<()> {
    let n = u32::try_from(n).map_err(|_| io::Error::other("cdb over 4 GiB"))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

/// A whole database of `records` (a key may repeat; lookups find the first).
pub fn build(records: &[(Vec<u8>, Vec<u8>)]) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; HEADER];
    let mut tables: Vec<Vec<(u32, usize)>> = vec![Vec::new(); 256];
    for (k, d) in records {
        let pos = out.len();
        put(&mut out, k.len())?;
        put(&mut out, d.len())?;
        out.extend_from_slice(k);
        out.extend_from_slice(d);
        let h = hash(k);
        tables[(h & 255) as usize].push((h, pos));
    }
    for (i, entries) in tables.iter().enumerate() {
        let slots = entries.len() * 2;
        let mut table = vec![(0u32, 0usize); slots];
        for &(h, pos) in entries {
            let mut s = (h >> 8) as usize % slots;
            while table[s].1 != 0 {
                s = (s + 1) % slots;
            }
            table[s] = (h, pos);
        }
        let at = out.len();
        let mut head = Vec::with_capacity(8);
        put(&mut head, at)?;
        put(&mut head, slots)?;
        out[i * 8..i * 8 + 8].copy_from_slice(&head);
        for (h, pos) in table {
            out.extend_from_slice(&h.to_le_bytes());
            put(&mut out, pos)?;
        }
    }
    Ok(out)
}

fn read_u32s<F: FsFile>(f: &mut F, at: u64) -> io::Result<(u32, u32)> {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        let n = f.read_at(at + got as u64, &mut b[got..])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "cdb: truncated"));
        }
        got += n;
    }
    let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Ok((word(0), word(4)))
}

fn read_exact<F: FsFile>(f: &mut F, at: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = f.read_at(at + got as u64, &mut v[got..])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "cdb: truncated"));
        }
        got += n;
    }
    Ok(v)
}

/// The data of the first record with `key`, reading the open database `f`. Data longer than
/// `max` is an error (a damaged file cannot make us allocate what it claims).
pub fn get<F: FsFile>(f: &mut F, key: &[u8], max: usize) -> io::Result<Option<Vec<u8>>> {
    let h = hash(key);
    let (table, slots) = read_u32s(f, u64::from(h & 255) * 8)?;
    if slots == 0 {
        return Ok(None);
    }
    let start = (h >> 8) % slots;
    for i in 0..slots {
        let s = (start + i) % slots;
        let (sh, pos) = read_u32s(f, u64::from(table) + u64::from(s) * 8)?;
        if pos == 0 {
            return Ok(None);
        }
        if sh != h {
            continue;
        }
        let (klen, dlen) = read_u32s(f, u64::from(pos))?;
        if klen as usize != key.len() {
            continue;
        }
        if read_exact(f, u64::from(pos) + 8, key.len())? == key {
            if dlen as usize > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "cdb: record too long",
                ));
            }
            let at = u64::from(pos) + 8 + u64::from(klen);
            return read_exact(f, at, dlen as usize).map(Some);
        }
    }
    Ok(None)
}

/// A database read whole into memory, for a reader that may read the file but not open it
/// for writing (the only open [`crate::env::Fs`] offers).
#[derive(Debug)]
pub struct InMemory(pub Vec<u8>);

impl FsFile for InMemory {
    fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(io::ErrorKind::PermissionDenied.into())
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let from = usize::try_from(offset).map_or(self.0.len(), |o| o.min(self.0.len()));
        let n = buf.len().min(self.0.len() - from);
        buf[..n].copy_from_slice(&self.0[from..from + n]);
        Ok(n)
    }
    fn set_len(&mut self, _: u64) -> io::Result<()> {
        Err(io::ErrorKind::PermissionDenied.into())
    }
    fn size(&mut self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{real::RealFs, Fs};

    #[test]
    fn what_is_built_is_found_and_nothing_else() {
        let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..500)
            .map(|i| {
                (
                    format!("key{i}").into_bytes(),
                    format!("data{i}").into_bytes(),
                )
            })
            .chain([
                (b"".to_vec(), b"empty".to_vec()),
                (b"key7".to_vec(), b"second".to_vec()),
            ])
            .collect();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.cdb");
        std::fs::write(&p, build(&recs).unwrap()).unwrap();
        let mut f = RealFs.open_rw(&p).unwrap();
        for i in 0..500 {
            let want = format!("data{i}").into_bytes();
            assert_eq!(
                get(&mut f, format!("key{i}").as_bytes(), 99).unwrap(),
                Some(want)
            );
        }
        assert_eq!(get(&mut f, b"", 99).unwrap(), Some(b"empty".to_vec()));
        let mut m = InMemory(std::fs::read(&p).unwrap());
        assert_eq!(get(&mut m, b"key42", 99).unwrap(), Some(b"data42".to_vec()));
        assert_eq!(get(&mut f, b"key500", 99).unwrap(), None);
        assert!(get(&mut f, b"key1", 2).is_err());
        // The empty database (qmail's cdbmake output for no records) finds nothing.
        std::fs::write(&p, build(&[]).unwrap()).unwrap();
        let mut f = RealFs.open_rw(&p).unwrap();
        assert_eq!(get(&mut f, b"x", 9).unwrap(), None);
    }

    #[test]
    fn hash_is_djbs() {
        assert_eq!(hash(b""), 5381);
        assert_eq!(hash(b"a"), (5381u32 * 33) ^ 97);
    }
}
