//! Layers are planned from metadata alone, and are a pure function of the
//! states. Data reads are counted by the image that makes them.

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
            let before = a.data_reads();
            let la = qcow2fs::chain::build(&a, &s).unwrap();
            use qcow2fs::View;
            let size = la.size();
            assert_eq!(
                before,
                a.data_reads(),
                "{}: planning read data",
                s.file_name
            );
            let lb = qcow2fs::chain::build(&b, &s).unwrap();
            assert_eq!(size, lb.size());
            let bytes = read_all(&la, 65536);
            assert!(bytes == read_all(&lb, 1 << 20), "{}", s.file_name);
            // The counter counts: a layer that stores data reads it.
            if la.stats().data_clusters > 0 {
                assert!(
                    a.data_reads() > before,
                    "{}: no data read counted",
                    s.file_name
                );
            }
        }
    }
}
