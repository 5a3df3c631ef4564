//! The inode table.
//!
//! Inode numbers: a node is named by what it shows (a source path, plus the
//! identity of a snapshot for snapshot files). The first time a node is met
//! it gets the next free number, and keeps it for the life of the mount;
//! numbers are never reused, so a deleted and re-created snapshot gets a new
//! one. Inode 1 is the root.

use super::Tree;
use super::node::Node;
use crate::error::{Error, Result};

/// Inode number of the root folder.
pub const ROOT_INO: u64 = 1;

impl Tree {
    pub(super) fn ino(&self, node: Node) -> u64 {
        let mut g = self.inodes.lock();
        if let Some(&i) = g.0.get(&node) {
            return i;
        }
        g.1.push(node.clone());
        let i = g.1.len() as u64;
        g.0.insert(node, i);
        i
    }

    pub(super) fn node(&self, ino: u64) -> Result<Node> {
        let g = self.inodes.lock();
        ino.checked_sub(1)
            .and_then(|i| g.1.get(i as usize))
            .cloned()
            .ok_or_else(|| Error::NotFound {
                name: format!("inode {ino}"),
            })
    }
}
