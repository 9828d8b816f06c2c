//! Decoding sluice's defmt log stream (COM2) with the image's ELF.

use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

/// Decodes the defmt frames in `stream` with the tables of `elf`; calls
/// `out` with each line. With `follow`, keeps reading as the stream grows
/// until `stop` says so.
pub fn decode(
    elf: &Path,
    stream: &mut dyn Read,
    follow: bool,
    stop: &dyn Fn() -> bool,
    out: &mut dyn FnMut(String),
) -> io::Result<()> {
    let bytes = std::fs::read(elf)?;
    let table = defmt_decoder::Table::parse(&bytes)
        .map_err(|e| io::Error::other(format!("{}: {e}", elf.display())))?
        .ok_or_else(|| io::Error::other(format!("{}: no defmt data (not a sluice image?)", elf.display())))?;
    let mut decoder = table.new_stream_decoder();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            if !follow || stop() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        decoder.received(&buf[..n]);
        loop {
            match decoder.decode() {
                Ok(frame) => out(frame.display(false).to_string()),
                Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
                Err(defmt_decoder::DecodeError::Malformed) => out("(malformed frame skipped)".into()),
            }
        }
    }
}

/// Decodes a whole captured stream into lines.
pub fn decode_file(elf: &Path, capture: &Path) -> io::Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut f = std::fs::File::open(capture)?;
    decode(elf, &mut f, false, &|| true, &mut |l| lines.push(l))?;
    Ok(lines)
}
