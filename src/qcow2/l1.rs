//! L1 tables, kept sparse: only the entries that are not zero, so that a
//! state costs memory for the L2 tables it has, not for its virtual size (a
//! 1 TiB disk with 4 KiB clusters has a 4 MiB L1 table, mostly zeros).

use crate::error::Result;
use crate::qcow2::be::be64_table;
use crate::source::SourceFile;

/// Bytes of an L1 table read at a time.
const READ_CHUNK: u64 = 64 << 10;

/// How the entries are held: a table of which more than a sixteenth is used
/// is kept whole (8 bytes an entry), any other as its used entries (16
/// bytes each), so a table never costs more than its size on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entries {
    Dense(Vec<u64>),
    /// (index, entry), in index order.
    Sparse(Vec<(u64, u64)>),
}

/// The entries of one L1 table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L1Table {
    entries: Entries,
    /// Entries in the table, used or not.
    len: u64,
}

impl L1Table {
    /// Read the `entries` of the table at `offset` (already validated to lie
    /// inside the file), a chunk at a time.
    pub fn read(file: &SourceFile, offset: u64, entries: u64, what: &str) -> Result<L1Table> {
        let mut t = L1Table {
            entries: Entries::Sparse(Vec::new()),
            len: entries,
        };
        let mut i = 0u64;
        while i < entries {
            let n = (entries - i).min(READ_CHUNK / 8);
            let bytes = file.read_vec(offset + i * 8, n * 8, what)?;
            t.extend(i, &be64_table(&bytes));
            i += n;
        }
        Ok(t)
    }

    /// Append `chunk`, the entries from index `at` on.
    fn extend(&mut self, at: u64, chunk: &[u64]) {
        match &mut self.entries {
            Entries::Dense(v) => v.extend_from_slice(chunk),
            Entries::Sparse(v) => {
                v.extend((at..).zip(chunk.iter().copied()).filter(|&(_, e)| e != 0));
                // Past a sixteenth of the table used, whole is kept: the
                // sparse form never costs more than an eighth of it.
                if v.len() as u64 > self.len / 16 {
                    let end = at + chunk.len() as u64;
                    let mut dense = Vec::with_capacity(self.len as usize);
                    dense.resize(end as usize, 0);
                    for &(i, e) in v.iter() {
                        dense[i as usize] = e;
                    }
                    self.entries = Entries::Dense(dense);
                }
            }
        }
    }

    /// A table from its entries (tests).
    pub fn from_entries(entries: &[u64]) -> L1Table {
        let mut t = L1Table {
            entries: Entries::Sparse(Vec::new()),
            len: entries.len() as u64,
        };
        t.extend(0, entries);
        t
    }

    /// Entry `index` (zero past the end of the table).
    pub fn get(&self, index: u64) -> u64 {
        match &self.entries {
            Entries::Dense(v) => usize::try_from(index)
                .ok()
                .and_then(|i| v.get(i))
                .copied()
                .unwrap_or(0),
            Entries::Sparse(v) => match v.binary_search_by_key(&index, |&(i, _)| i) {
                Ok(k) => v[k].1,
                Err(_) => 0,
            },
        }
    }

    /// The first entry after `index` that is not zero: (index, entry).
    pub fn next_used(&self, index: u64) -> Option<(u64, u64)> {
        match &self.entries {
            Entries::Dense(v) => {
                let from = usize::try_from(index.checked_add(1)?).ok()?;
                let rest = v.get(from..)?;
                let k = rest.iter().position(|&e| e != 0)?;
                Some(((from + k) as u64, rest[k]))
            }
            Entries::Sparse(v) => {
                let k = v.partition_point(|&(i, _)| i <= index);
                v.get(k).copied()
            }
        }
    }

    /// The entries that are not zero, in index order: (index, entry).
    pub fn used(&self) -> Box<dyn Iterator<Item = (u64, u64)> + '_> {
        match &self.entries {
            Entries::Dense(v) => Box::new((0u64..).zip(v.iter().copied()).filter(|&(_, e)| e != 0)),
            Entries::Sparse(v) => Box::new(v.iter().copied()),
        }
    }

    /// Entries in the table.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a table of no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes held.
    pub fn weight(&self) -> u64 {
        match &self.entries {
            Entries::Dense(v) => (v.len() * 8) as u64,
            Entries::Sparse(v) => (v.len() * 16) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_used_entries() {
        let t = L1Table::from_entries(&[0, 5, 0, 0, 9, 0]);
        assert_eq!(t.len(), 6);
        assert_eq!(t.used().collect::<Vec<_>>(), vec![(1, 5), (4, 9)]);
        assert_eq!((t.get(0), t.get(1), t.get(4), t.get(99)), (0, 5, 9, 0));
        assert_eq!(t.next_used(0), Some((1, 5)));
        assert_eq!(t.next_used(1), Some((4, 9)));
        assert_eq!(t.next_used(4), None);
        // Mostly used: kept whole, read the same.
        let d = L1Table::from_entries(&[3, 0, 7, 8]);
        assert_eq!(d.used().collect::<Vec<_>>(), vec![(0, 3), (2, 7), (3, 8)]);
        assert_eq!((d.get(1), d.get(2), d.next_used(0)), (0, 7, Some((2, 7))));
        assert_eq!(d.weight(), 32);
    }
}
