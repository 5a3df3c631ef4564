//! Decompression of compressed clusters.
//!
//! The output is bounded by the cluster size whatever the input says, so a
//! crafted stream that would "inflate forever" stops after one cluster.

use std::io::Read;

use crate::error::{Error, Result};
use crate::qcow2::header::CompressionType;

/// Decompress the data of one compressed cluster found at `host` into exactly
/// `cluster_size` bytes. Input bytes after the end of the stream are ignored,
/// as QEMU ignores them (another cluster may start in the same sector).
pub fn decompress(
    kind: CompressionType,
    input: &[u8],
    cluster_size: usize,
    host: u64,
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; cluster_size];
    let err = |detail: String| Error::Decompress {
        offset: host,
        detail,
    };
    match kind {
        CompressionType::Zlib => {
            let mut d = flate2::read::DeflateDecoder::new(input);
            fill(&mut d, &mut out).map_err(|e| err(format!("deflate: {e}")))?
        }
        CompressionType::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| err(format!("zstd: {e}")))?
                .single_frame();
            fill(&mut d, &mut out).map_err(|e| err(format!("zstd: {e}")))?
        }
    }
    Ok(out)
}

/// Read until `out` is full; a stream that ends early is an error.
fn fill(r: &mut dyn Read, out: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < out.len() {
        let n = r.read(&mut out[done..])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("stream ended after {done} of {} bytes", out.len()),
            ));
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn inflates_raw_deflate_with_trailing_garbage() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        let mut c = enc.finish().unwrap();
        c.extend_from_slice(&[0xaa; 100]);
        assert_eq!(
            decompress(CompressionType::Zlib, &c, 4096, 0).unwrap(),
            data
        );
    }

    #[test]
    fn short_and_garbage_streams_are_errors() {
        assert!(decompress(CompressionType::Zlib, &[0xff; 64], 4096, 7).is_err());
        assert!(decompress(CompressionType::Zstd, &[0xff; 64], 4096, 7).is_err());
        let c = zstd::bulk::compress(&[1u8; 100], 3).unwrap();
        let e = decompress(CompressionType::Zstd, &c, 4096, 9).unwrap_err();
        assert!(e.to_string().contains("0x9"), "{e}");
    }

    #[test]
    fn output_is_bounded_by_the_cluster_size() {
        let c = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
        assert_eq!(
            decompress(CompressionType::Zstd, &c, 4096, 0)
                .unwrap()
                .len(),
            4096
        );
    }
}
