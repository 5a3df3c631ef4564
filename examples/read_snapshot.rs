//! Read one state of a qcow2 image through the library and write it to
//! stdout as a raw disk.
//!
//! usage: read_snapshot IMAGE [SNAPSHOT-NAME-OR-ID]   (no snapshot: active)

use std::io::Write;

use qcow2fs::{Image, OpenOptions, StateId, View};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: read_snapshot IMAGE [SNAPSHOT]");
        std::process::exit(2);
    };
    let image = Image::open(path.as_ref(), &OpenOptions::new(16 << 20))?;
    let which = match args.get(1) {
        None => StateId::Active,
        Some(want) => {
            let i = image
                .snapshots()
                .iter()
                .position(|s| &s.name == want || &s.id == want)
                .ok_or_else(|| format!("no snapshot named {want}"))?;
            StateId::Snapshot(i)
        }
    };
    let state = image.state(which)?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < state.size() {
        let n = state.read_at(&mut buf, pos)?;
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}
