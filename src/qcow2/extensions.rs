//! Header extensions (spec, "Header extensions"): backing format, external
//! data file, feature names, bitmaps.

use crate::error::{Error, Result};
use crate::qcow2::be::Be;

pub(super) const EXT_END: u32 = 0;
pub(super) const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// One entry of the feature name table extension.
#[derive(Clone, Debug)]
pub struct FeatureName {
    /// 0 incompatible, 1 compatible, 2 autoclear.
    pub kind: u8,
    /// Bit number.
    pub bit: u8,
    /// Human-readable name.
    pub name: String,
}

/// The bitmaps extension: how many persistent bitmaps there are and where
/// their directory lies. Only `check` reads it (bitmaps do not change what
/// a state reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapDirectory {
    /// Number of bitmaps.
    pub count: u32,
    /// Size of the directory in bytes.
    pub size: u64,
    /// Offset of the directory in the file.
    pub offset: u64,
}

/// What the header extensions say, as far as this reader uses them.
#[derive(Default)]
pub(super) struct Extensions {
    pub(super) backing_format: Option<String>,
    pub(super) data_file: Option<String>,
    pub(super) feature_names: Vec<FeatureName>,
    pub(super) has_bitmaps: bool,
    pub(super) bitmap_directory: Option<BitmapDirectory>,
}

impl Extensions {
    /// Decode the extensions that follow a header of `header_length` bytes
    /// in its first cluster, `be`.
    pub(super) fn read(be: &Be, header_length: u32) -> Result<Extensions> {
        let mut ext = Extensions::default();
        let mut off = header_length as usize;
        // Extensions end at a zero type or at the end of the first cluster.
        while off + 8 <= be.len() {
            let ty = be.u32(off)?;
            let len = be.u32(off + 4)? as usize;
            if ty == EXT_END {
                break;
            }
            let what = format!("header extension {ty:#x} at byte {off}");
            let data = Be::new(
                be.bytes(off + 8, len).map_err(|_| {
                    Error::corrupt(
                        what.clone(),
                        format!("length {len} runs past the first cluster"),
                    )
                })?,
                "header extension",
            );
            match ty {
                EXT_BACKING_FORMAT => {
                    ext.backing_format = Some(ext_string(data.bytes(0, len)?));
                }
                EXT_DATA_FILE => ext.data_file = Some(ext_string(data.bytes(0, len)?)),
                EXT_FEATURE_NAMES => {
                    for i in 0..len / 48 {
                        let e = data.bytes(i * 48, 48)?;
                        ext.feature_names.push(FeatureName {
                            kind: e[0],
                            bit: e[1],
                            name: ext_string(&e[2..]),
                        });
                    }
                }
                EXT_BITMAPS => {
                    ext.has_bitmaps = true;
                    if len >= 24 {
                        ext.bitmap_directory = Some(BitmapDirectory {
                            count: data.u32(0)?,
                            size: data.u64(8)?,
                            offset: data.u64(16)?,
                        });
                    }
                }
                EXT_CRYPTO => {}
                _ => {}
            }
            // Each extension's data is padded to a multiple of 8 bytes.
            off = off
                .checked_add(8 + len.div_ceil(8) * 8)
                .ok_or_else(|| Error::corrupt(what, "length overflows"))?;
        }
        Ok(ext)
    }
}

fn ext_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}
