//! Open an image and read every state: the header, extensions, snapshot
//! table, L1/L2 walks and decompression.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qcow2fs::{StateId, View, VmState};

mod common;

fuzz_target!(|data: &[u8]| {
    let Some(image) = common::open(data) else { return };
    let mut states = vec![StateId::Active];
    states.extend((0..image.snapshots().len().min(8)).map(StateId::Snapshot));
    let mut buf = vec![0u8; 256 << 10];
    for which in states {
        let Ok(s) = image.state(which) else { continue };
        let size = s.size();
        // The start, the end and a spread of offsets: bounded work whatever
        // the size claims.
        for k in 0..8u64 {
            let off = size / 8 * k;
            let _ = s.read_at(&mut buf, off);
        }
        let _ = s.extents(0, size.min(1 << 30));
        if let StateId::Snapshot(i) = which
            && let Ok(v) = VmState::open(&image, i)
        {
            let _ = v.read_at(&mut buf, 0);
        }
    }
});
