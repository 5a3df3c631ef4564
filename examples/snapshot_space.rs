//! Per-snapshot space figures, through the library alone: the bytes unique
//! to each snapshot (what deleting it would free) and the size of the layer
//! standing for it in the reverse and forward chains.
//!
//! usage: snapshot_space IMAGE

use qcow2fs::chain::{Direction, build, layers};
use qcow2fs::check::check;
use qcow2fs::{Image, OpenOptions, StateId, View};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: snapshot_space IMAGE");
        std::process::exit(2);
    };
    let image = Image::open(path.as_ref(), &OpenOptions::new(16 << 20))?;
    let report = check(&image)?;
    let cs = image.header().cluster_size();
    let layer_size = |dir: Direction, which: StateId| -> Result<u64, qcow2fs::Error> {
        let spec = layers(&image, dir).into_iter().find(|s| s.x == which);
        match spec {
            Some(s) => Ok(build(&image, &s)?.size()),
            None => Ok(0),
        }
    };
    println!(
        "{:<6} {:<20} {:>14} {:>16} {:>16}",
        "ID", "NAME", "UNIQUE BYTES", "REVERSE LAYER", "FORWARD LAYER"
    );
    for (i, sn) in image.snapshots().iter().enumerate() {
        let which = StateId::Snapshot(i);
        // states[0] is the active state; snapshots follow in table order.
        let unique = report.states[i + 1].unique_clusters * cs;
        println!(
            "{:<6} {:<20} {:>14} {:>16} {:>16}",
            sn.id,
            sn.name,
            unique,
            layer_size(Direction::Reverse, which)?,
            layer_size(Direction::Forward, which)?
        );
    }
    let unique = report.states[0].unique_clusters * cs;
    println!(
        "{:<6} {:<20} {:>14} {:>16} {:>16}",
        "-",
        "(active)",
        unique,
        layer_size(Direction::Reverse, StateId::Active)?,
        layer_size(Direction::Forward, StateId::Active)?
    );
    Ok(())
}
