//! What the tree remembers of images beyond the block caches: open states
//! (each with its L1 table), cluster maps and layer plans, under one byte
//! budget, evicted least recently used first. An evicted entry is rebuilt
//! from metadata when next needed; an open file keeps its own view alive.

use parking_lot::Mutex;

use crate::cache::ByteLru;
use crate::chain::LayerSpec;
use crate::image::{State, StateId};
use crate::layer::{ClusterMap, Layer};

/// Key of a memo: the opening of the image (its id), and what in it.
pub(super) type MemoKey<T> = (u64, T);

/// The memo caches of a mount.
pub(super) struct Memos {
    pub(super) states: ByteLru<MemoKey<StateId>, State>,
    pub(super) maps: ByteLru<MemoKey<StateId>, ClusterMap>,
    pub(super) layers: ByteLru<MemoKey<LayerSpec>, Layer>,
    /// Held while an `info` report is gathered.
    pub(super) report_gate: Mutex<()>,
}

impl Memos {
    /// Memos sharing `budget` bytes: a third each.
    pub(super) fn new(budget: u64) -> Memos {
        Memos {
            states: ByteLru::new(budget / 3),
            maps: ByteLru::new(budget / 3),
            layers: ByteLru::new(budget / 3),
            report_gate: Mutex::new(()),
        }
    }

    /// Drop everything remembered of the opening `image_id`.
    pub(super) fn forget_image(&self, image_id: u64) {
        self.states.retain(|k| k.0 != image_id);
        self.maps.retain(|k| k.0 != image_id);
        self.layers.retain(|k| k.0 != image_id);
    }
}
