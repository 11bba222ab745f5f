//! Layer-aware shipping, the pure part: chain IDs of an image's layers, and a streaming
//! filter over a `docker save` tar that drops whole entries (the directories of layers the
//! target already holds) or captures one small entry (manifest.json) without keeping
//! anything else.
//!
//! Why dropping is sound: `docker load` (moby image/tarexport/load.go) looks each layer's
//! chain ID up in the target's layer store and opens `<dir>/layer.tar` only when it is
//! missing; the per-layer `json`/`VERSION` files are read only by the pre-1.10 format,
//! which a tar with manifest.json never takes.
//!
//! Never buffers a layer: it holds at most one entry's tar headers (extension headers are
//! bounded) and the captured entry (bounded); every other byte passes through or is
//! dropped as it arrives.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

/// The largest extension header (PAX / GNU long name) or captured entry accepted.
const MAX_HELD: u64 = 4 << 20;
const BLOCK: usize = 512;

/// Chain IDs of an image's layers, from its diffIDs in order (`RootFS.Layers`):
/// chain(0) = diff(0), chain(i) = sha256(chain(i-1) + " " + diff(i)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!(
                "sha256:{}",
                crate::digest::hex(&Sha256::digest(format!("{parent} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// The layer directories of a save tar that need not travel: `layers[i]` is manifest.json's
/// `Layers[i]` (`<dir>/layer.tar`), `chains[i]` its chain ID, `present` the chain IDs the
/// target holds. A directory is dropped only when every position that uses it is present.
pub fn dirs_to_drop(
    layers: &[String],
    chains: &[String],
    present: &HashSet<String>,
) -> HashSet<String> {
    let mut keep = HashSet::new();
    let mut drop = HashSet::new();
    for (path, chain) in layers.iter().zip(chains) {
        let Some((dir, _)) = path.split_once('/') else {
            keep.insert(path.clone());
            continue;
        };
        if present.contains(chain) {
            drop.insert(dir.to_string());
        } else {
            keep.insert(dir.to_string());
        }
    }
    drop.retain(|d| !keep.contains(d));
    drop
}

/// The `Layers` list of the (single image) manifest.json of a save tar.
pub fn manifest_layers(manifest: &[u8]) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(rename = "Layers")]
        layers: Vec<String>,
    }
    let items: Vec<Item> = serde_json::from_slice(manifest)
        .map_err(|e| format!("manifest.json of the export: {e}"))?;
    match items.as_slice() {
        [one] => Ok(one.layers.clone()),
        _ => Err(format!("the export holds {} images, not one", items.len())),
    }
}

/// The bytes the target must store for a save tar's `layers` (manifest.json's `Layers`):
/// the sizes of the `layer.tar` entries whose directory is not in `drop`, each counted
/// once. `None` when a layer's size was not seen.
pub fn bytes_to_load(
    layers: &[String],
    drop: &HashSet<String>,
    sizes: &std::collections::HashMap<String, u64>,
) -> Option<u64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    for path in layers {
        let dir = path.split('/').next().unwrap_or(path);
        if drop.contains(dir) || !seen.insert(path.as_str()) {
            continue;
        }
        total += sizes.get(path)?;
    }
    Some(total)
}

/// What the filter does with one entry, chosen from its path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Pass,
    Drop,
    /// Keep its content (bounded) and pass nothing.
    Capture,
}

enum State {
    /// Filling a 512-byte header block.
    Header,
    /// Reading an extension header's data (held, with its header, in `held`).
    Extension { remaining: u64, padded: u64 },
    /// An entry's data and padding.
    Data {
        remaining: u64,
        data_left: u64,
        action: Action,
    },
    /// After the end-of-archive block: pass everything.
    Trailer,
}

/// A streaming tar filter: feed it chunks, it returns what to pass on.
pub struct TarFilter<F: Fn(&str) -> Action> {
    choose: F,
    state: State,
    block: Vec<u8>,
    /// Extension headers and their data waiting for the entry they describe.
    held: Vec<u8>,
    /// A path given by a PAX `path` record or a GNU long name.
    long_name: Option<String>,
    captured: Vec<u8>,
    pub dropped: u64,
    /// Every entry seen, with its data size (a save tar holds a few per layer).
    pub sizes: std::collections::HashMap<String, u64>,
}

fn octal_or_binary(field: &[u8]) -> Result<u64, String> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for b in &field[1..] {
            v = v.checked_mul(256).ok_or("tar size overflows")? + *b as u64;
        }
        return Ok(v);
    }
    let s: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| format!("bad tar size field {s:?}"))
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// The `path` record of PAX extended header data, if any.
fn pax_path(data: &[u8]) -> Option<String> {
    let mut rest = data;
    let mut found = None;
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp || len > rest.len() {
            return found;
        }
        let record = &rest[sp + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(v) = record.strip_prefix(b"path=") {
            found = Some(String::from_utf8_lossy(v).into_owned());
        }
        rest = &rest[len..];
    }
    found
}

impl<F: Fn(&str) -> Action> TarFilter<F> {
    pub fn new(choose: F) -> Self {
        Self {
            choose,
            state: State::Header,
            block: Vec::with_capacity(BLOCK),
            held: Vec::new(),
            long_name: None,
            captured: Vec::new(),
            dropped: 0,
            sizes: std::collections::HashMap::new(),
        }
    }

    /// The captured entry's bytes.
    pub fn captured(&self) -> &[u8] {
        &self.captured
    }

    /// Filter one chunk of the tar; the bytes to pass on.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(chunk.len());
        while !chunk.is_empty() {
            match &mut self.state {
                State::Trailer => {
                    out.extend_from_slice(chunk);
                    chunk = &[];
                }
                State::Header => {
                    let take = (BLOCK - self.block.len()).min(chunk.len());
                    self.block.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.block.len() == BLOCK {
                        self.header(&mut out)?;
                    }
                }
                State::Extension { remaining, padded } => {
                    let take = (*remaining).min(chunk.len() as u64) as usize;
                    self.held.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        let data_start = self.held.len() - *padded as usize;
                        let header_flag = self.held[data_start - BLOCK + 156];
                        let data = &self.held[data_start..];
                        match header_flag {
                            b'x' => {
                                if let Some(p) = pax_path(data) {
                                    self.long_name = Some(p);
                                }
                            }
                            b'L' => self.long_name = Some(cstr(data)),
                            _ => {}
                        }
                        self.state = State::Header;
                    }
                }
                State::Data {
                    remaining,
                    data_left,
                    action,
                } => {
                    let take = (*remaining).min(chunk.len() as u64) as usize;
                    let bytes = &chunk[..take];
                    match action {
                        Action::Pass => out.extend_from_slice(bytes),
                        Action::Drop => self.dropped += take as u64,
                        Action::Capture => {
                            let useful = (*data_left).min(take as u64) as usize;
                            self.captured.extend_from_slice(&bytes[..useful]);
                        }
                    }
                    *data_left = data_left.saturating_sub(take as u64);
                    *remaining -= take as u64;
                    chunk = &chunk[take..];
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(out)
    }

    /// A full header block is in `self.block`: decide what follows.
    fn header(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        if block.iter().all(|b| *b == 0) {
            out.append(&mut self.held);
            out.extend_from_slice(&block);
            self.state = State::Trailer;
            return Ok(());
        }
        let size = octal_or_binary(&block[124..136])?;
        let flag = block[156];
        if matches!(flag, b'x' | b'L' | b'K') {
            if size > MAX_HELD {
                return Err(format!("a tar extension header of {size} bytes"));
            }
            self.held.extend_from_slice(&block);
            let p = padded(size);
            self.state = if p == 0 {
                State::Header
            } else {
                State::Extension {
                    remaining: p,
                    padded: p,
                }
            };
            return Ok(());
        }
        let name = match self.long_name.take() {
            Some(n) => n,
            None => {
                let name = cstr(&block[0..100]);
                let prefix = if &block[257..262] == b"ustar" {
                    cstr(&block[345..500])
                } else {
                    String::new()
                };
                if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                }
            }
        };
        // Hard links and directories carry no data whatever the size field says.
        let size = if matches!(flag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6') {
            0
        } else {
            size
        };
        let path = name.trim_start_matches("./");
        self.sizes.insert(path.to_string(), size);
        let action = (self.choose)(path);
        if action == Action::Capture && size > MAX_HELD {
            return Err(format!("{name} in the export is {size} bytes"));
        }
        match action {
            Action::Pass => {
                out.append(&mut self.held);
                out.extend_from_slice(&block);
            }
            Action::Drop | Action::Capture => {
                self.dropped += (self.held.len() + BLOCK) as u64;
                self.held.clear();
            }
        }
        let p = padded(size);
        self.state = if p == 0 {
            State::Header
        } else {
            State::Data {
                remaining: p,
                data_left: size,
                action,
            }
        };
        Ok(())
    }

    /// Whether the whole archive was seen (its end-of-archive block).
    pub fn complete(&self) -> bool {
        matches!(self.state, State::Trailer)
    }
}

/// The action for a save tar entry when `drop` holds the layer directories to leave out.
pub fn drop_dirs(drop: &HashSet<String>, path: &str) -> Action {
    let dir = path.split('/').next().unwrap_or(path);
    if drop.contains(dir) {
        Action::Drop
    } else {
        Action::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn names(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut v).unwrap();
                (e.path().unwrap().display().to_string(), v)
            })
            .collect()
    }

    #[test]
    fn bytes_to_load_counts_the_layers_that_travel_once_each() {
        let t = tar_of(&[
            ("a/layer.tar", &[1u8; 3000]),
            ("b/layer.tar", &[2u8; 700]),
            ("c/layer.tar", &[3u8; 50]),
            ("manifest.json", b"[]"),
        ]);
        let mut f = TarFilter::new(|_| Action::Drop);
        f.push(&t).unwrap();
        let layers: Vec<String> = ["a/layer.tar", "b/layer.tar", "c/layer.tar", "c/layer.tar"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let none = HashSet::new();
        assert_eq!(bytes_to_load(&layers, &none, &f.sizes), Some(3750));
        let drop: HashSet<String> = ["a".to_string()].into();
        assert_eq!(bytes_to_load(&layers, &drop, &f.sizes), Some(750));
        let missing = vec!["d/layer.tar".to_string()];
        assert_eq!(bytes_to_load(&missing, &none, &f.sizes), None);
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let d = vec!["sha256:aa".to_string(), "sha256:bb".to_string()];
        let c = chain_ids(&d);
        assert_eq!(c[0], "sha256:aa");
        let want = crate::digest::hex(&Sha256::digest(b"sha256:aa sha256:bb"));
        assert_eq!(c[1], format!("sha256:{want}"));
    }

    #[test]
    fn drops_whole_directories_in_any_chunking() {
        let big = vec![7u8; 5000];
        let long = format!("{}/layer.tar", "d".repeat(120));
        let src = tar_of(&[
            ("aaa/VERSION", b"1.0"),
            ("aaa/layer.tar", &big),
            ("bbb/layer.tar", b"keep me"),
            (&long, b"long name, dropped"),
            ("manifest.json", b"[]"),
        ]);
        let drop: HashSet<String> = ["aaa".to_string(), "d".repeat(120)].into();
        for chunk in [1, 7, 512, 513, 4096, src.len()] {
            let mut f = TarFilter::new(|p| drop_dirs(&drop, p));
            let mut out = Vec::new();
            for c in src.chunks(chunk) {
                out.extend(f.push(c).unwrap());
            }
            assert!(f.complete());
            assert_eq!(
                out.len() as u64 + f.dropped,
                src.len() as u64,
                "chunk {chunk}"
            );
            let got = names(&out);
            let got: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(got, ["bbb/layer.tar", "manifest.json"], "chunk {chunk}");
        }
    }

    #[test]
    fn captures_one_entry() {
        let src = tar_of(&[
            ("x/layer.tar", &[1u8; 2000]),
            ("manifest.json", b"[{\"Layers\":[\"x/layer.tar\"]}]"),
        ]);
        let mut f = TarFilter::new(|p| {
            if p == "manifest.json" {
                Action::Capture
            } else {
                Action::Drop
            }
        });
        for c in src.chunks(100) {
            assert!(f.push(c).unwrap().is_empty() || f.complete());
        }
        assert_eq!(manifest_layers(f.captured()).unwrap(), ["x/layer.tar"]);
    }

    #[test]
    fn keeps_a_directory_one_position_still_needs() {
        let layers = vec![
            "a/layer.tar".to_string(),
            "b/layer.tar".to_string(),
            "a/layer.tar".to_string(),
        ];
        let chains = vec!["c0".to_string(), "c1".to_string(), "c2".to_string()];
        let present: HashSet<String> = ["c0".to_string(), "c1".to_string()].into();
        assert_eq!(
            dirs_to_drop(&layers, &chains, &present),
            HashSet::from(["b".to_string()])
        );
    }
}
