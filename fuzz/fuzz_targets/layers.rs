//! Plan and read the synthesized layers of both chains.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qcow2fs::View;
use qcow2fs::chain::{Direction, build, layers};

mod common;

fuzz_target!(|data: &[u8]| {
    let Some(image) = common::open(data) else { return };
    if image.snapshots().len() > 8 || image.header().size > 1 << 32 {
        return;
    }
    let mut buf = vec![0u8; 256 << 10];
    for dir in [Direction::Reverse, Direction::Forward] {
        for spec in layers(&image, dir) {
            let Ok(l) = build(&image, &spec) else { continue };
            let size = l.size();
            for k in 0..8u64 {
                let _ = l.read_at(&mut buf, size / 8 * k);
            }
        }
    }
});
