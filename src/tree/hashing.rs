//! Hashing of chain folder files, for `SHA256SUMS`: the digests known, each
//! with the stamps of the sources it was computed from; the files hashed as
//! they are read, on threads of their own, under the mount's budget; and
//! the files that an open which hashed them did not read in full.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use super::entry::Stamp;
use super::images::Sources;
use super::node::Node;
use super::stream::{Budget, HashThread};
use crate::chain::Direction;
use crate::chain::sums::Sha256Digest;
use crate::view::View;

/// Digests of chain folder files, each with the stamps of the sources it
/// was computed from. One entry per file of a chain folder: bounded by the
/// images and their snapshots, 100 bytes or so each.
type Digests = Mutex<HashMap<Node, (Vec<Stamp>, Sha256Digest)>>;

/// The hashing of one mount.
#[derive(Default)]
pub(super) struct Hashing {
    digests: Arc<Digests>,
    /// Chain folder files that an open which hashed them did not read from
    /// start to end: read through the page cache from then on.
    scattered: Mutex<HashSet<Node>>,
    /// What the streaming hashes hold at once.
    budget: Arc<Budget>,
}

impl Hashing {
    /// The digest of `node`, if it is remembered for sources of `stamps`.
    pub(super) fn known(&self, node: &Node, stamps: &[Stamp]) -> Option<Sha256Digest> {
        match self.digests.lock().get(node) {
            Some((known, d)) if *known == stamps => Some(*d),
            _ => None,
        }
    }

    /// Remember the digest of `node`, computed from sources of `stamps`.
    pub(super) fn remember(&self, node: &Node, stamps: Vec<Stamp>, d: Sha256Digest) {
        self.digests.lock().insert(node.clone(), (stamps, d));
    }

    /// Hashing for a handle of a file that `SHA256SUMS` lists: what is read
    /// of it is hashed on a thread of its own, and once the whole file was
    /// read, its digest is remembered, unless its `sources` changed
    /// meanwhile.
    pub(super) fn start(
        &self,
        node: &Node,
        sources: impl FnOnce() -> Option<Sources>,
        view: &Arc<dyn View>,
    ) -> Option<HashThread> {
        if !matches!(node, Node::Layer(..) | Node::Pass(..) | Node::Manifest(..)) {
            return None;
        }
        // incremental/'s INDEX has no checksum file.
        if matches!(node, Node::Manifest(_, Direction::Incremental)) {
            return None;
        }
        let sources = sources()?;
        let stamps = sources.stamps()?;
        let known = self
            .digests
            .lock()
            .get(node)
            .is_some_and(|(s, _)| *s == stamps);
        if known {
            return None;
        }
        let digests = Arc::clone(&self.digests);
        let node = node.clone();
        HashThread::start(
            Arc::clone(view),
            &self.budget,
            Box::new(move |d| {
                if sources.stamps().as_ref() == Some(&stamps) {
                    digests.lock().insert(node, (stamps, d));
                }
            }),
        )
    }

    /// Whether every open of `node` that hashed it read it in full.
    pub(super) fn read_in_full_so_far(&self, node: &Node) -> bool {
        !self.scattered.lock().contains(node)
    }

    /// A handle of `node` is closed: if it hashed its file (`hashed`) and
    /// the digest is still not known, its reader went about the file some
    /// other way than a copy.
    pub(super) fn ended(&self, node: &Node, hashed: bool) {
        if hashed && !self.digests.lock().contains_key(node) {
            log::debug!("{node:?}: closed before it was read in full");
            self.scattered.lock().insert(node.clone());
        }
    }
}
