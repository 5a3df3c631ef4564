//! Layers are planned from metadata alone, and are a pure function of the
//! states. In its own test binary: it counts data reads process-wide.

mod common;
use common::*;

use qcow2fs::chain::{Direction, layers};
use qcow2fs::{Image, OpenOptions};

#[test]
fn layers_are_a_pure_function_of_the_states_and_read_no_data_to_plan() {
    let d = scratch();
    let img = build_chain_image(d.path(), "vm.qcow2", "");
    let a = Image::open(&img, &OpenOptions::new(8 << 20)).unwrap();
    let b = Image::open(&img, &OpenOptions::new(1 << 20)).unwrap();
    for dir in [Direction::Reverse, Direction::Forward] {
        for s in layers(&a, dir) {
            let before = qcow2fs::image::DATA_READS.load(std::sync::atomic::Ordering::Relaxed);
            let la = qcow2fs::chain::build(&a, &s).unwrap();
            use qcow2fs::View;
            let size = la.size();
            assert_eq!(
                before,
                qcow2fs::image::DATA_READS.load(std::sync::atomic::Ordering::Relaxed)
            );
            let lb = qcow2fs::chain::build(&b, &s).unwrap();
            assert_eq!(size, lb.size());
            assert!(
                read_all(&la, 65536) == read_all(&lb, 1 << 20),
                "{}",
                s.file_name
            );
        }
    }
}
