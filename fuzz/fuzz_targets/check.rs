//! The consistency check and the info report: refcount walk and every table.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some(image) = common::open(data) else { return };
    if let Ok(info) = qcow2fs::report::Info::gather(&image) {
        let _ = info.to_text();
        let _ = info.to_json();
    }
});
