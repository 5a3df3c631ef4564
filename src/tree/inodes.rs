//! The inode table.
//!
//! What an inode number means: a node is named by what it shows (a source
//! path, plus the identity of a snapshot for snapshot files, plus the
//! states a layer is built from), and its number is derived from that name
//! by a fixed hash. So a file keeps its number for as long as it exists,
//! even after the kernel forgets it and looks it up again, and a deleted
//! and re-created snapshot (a new identity) gets a new one. The table holds
//! only the nodes the kernel knows: each lookup counts one reference, and a
//! node is dropped when the kernel forgets its last. Two names whose hashes
//! meet take the next free number. Inode 1 is the root, never forgotten.
//! `SHA256SUMS` and `FILE.sha256` files are numbered above every other
//! node (see `SUMS_FIRST`).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use parking_lot::Mutex;

use super::node::Node;
use crate::error::{Error, Result};

/// Inode number of the root folder.
pub const ROOT_INO: u64 = 1;

/// Numbers from here up are derived from node names (0 is invalid, 1 the
/// root), below 2^63 so that no tool mistakes them for negative.
const FIRST_DERIVED: u64 = 2;
/// `SHA256SUMS` files take their numbers from the upper half of the range,
/// every other node from the lower: a copy that goes through a folder in
/// inode order (GNU cp does) reads the files it lists, and so hashes them,
/// before it reads the sums.
const SUMS_FIRST: u64 = 1 << 62;
const DERIVED_END: u64 = 1 << 63;

#[derive(Default)]
struct Table {
    /// Number to node and the kernel's count of references to it.
    by_ino: HashMap<u64, (Node, u64)>,
    by_node: HashMap<Node, u64>,
}

impl Table {
    /// The node's number: its entry, or the first free derived number.
    fn number(&self, node: &Node) -> u64 {
        if let Some(&i) = self.by_node.get(node) {
            return i;
        }
        let (first, end) = match node {
            Node::Sums(..) | Node::FileSum(..) => (SUMS_FIRST, DERIVED_END),
            _ => (FIRST_DERIVED, SUMS_FIRST),
        };
        let span = end - first;
        let mut h = DefaultHasher::new();
        node.hash(&mut h);
        let mut ino = first + h.finish() % span;
        while self.by_ino.contains_key(&ino) {
            ino = first + (ino - first + 1) % span;
        }
        ino
    }
}

/// The nodes the kernel holds references to.
pub(super) struct Inodes {
    table: Mutex<Table>,
}

impl Inodes {
    /// A table holding the root.
    pub(super) fn new(root: Node) -> Inodes {
        let mut t = Table::default();
        t.by_ino.insert(ROOT_INO, (root.clone(), 1));
        t.by_node.insert(root, ROOT_INO);
        Inodes {
            table: Mutex::new(t),
        }
    }

    /// The number `node` has, or would have if looked up now (for folder
    /// listings, which give the kernel no reference).
    pub(super) fn number(&self, node: &Node) -> u64 {
        self.table.lock().number(node)
    }

    /// A lookup: the node's number, with one more kernel reference.
    pub(super) fn remember(&self, node: Node) -> u64 {
        let mut t = self.table.lock();
        let ino = t.number(&node);
        match t.by_ino.get_mut(&ino) {
            Some((_, refs)) => *refs += 1,
            None => {
                t.by_ino.insert(ino, (node.clone(), 1));
                t.by_node.insert(node, ino);
            }
        }
        ino
    }

    /// The node numbered `ino`, while the kernel holds it.
    pub(super) fn node(&self, ino: u64) -> Result<Node> {
        self.table
            .lock()
            .by_ino
            .get(&ino)
            .map(|(n, _)| n.clone())
            .ok_or_else(|| Error::NotFound {
                name: format!("inode {ino}"),
            })
    }

    /// The kernel dropped `n` references to `ino`; true when it was the
    /// last and the node is gone from the table.
    pub(super) fn forget(&self, ino: u64, n: u64) -> bool {
        if ino == ROOT_INO {
            return false;
        }
        let mut t = self.table.lock();
        let Some((node, refs)) = t.by_ino.get_mut(&ino) else {
            return false;
        };
        *refs = refs.saturating_sub(n);
        if *refs > 0 {
            return false;
        }
        let node = node.clone();
        t.by_ino.remove(&ino);
        t.by_node.remove(&node);
        true
    }

    /// Nodes held.
    pub(super) fn len(&self) -> usize {
        self.table.lock().by_ino.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Direction;
    use std::path::PathBuf;

    #[test]
    fn sums_are_numbered_above_the_files_they_list() {
        let t = Inodes::new(Node::Plain(PathBuf::new()));
        for i in 0..200 {
            let rel = PathBuf::from(format!("vm{i}.qcow2"));
            for dir in [Direction::Reverse, Direction::Forward] {
                let sums = t.number(&Node::Sums(rel.clone(), dir));
                let manifest = t.number(&Node::Manifest(rel.clone(), dir));
                assert!((SUMS_FIRST..DERIVED_END).contains(&sums), "{sums}");
                assert!(
                    (FIRST_DERIVED..SUMS_FIRST).contains(&manifest),
                    "{manifest}"
                );
            }
        }
    }
}
