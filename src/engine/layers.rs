//! Layer-aware shipping, the pure part: chain IDs of an image's layers, a streaming
//! filter over a `docker save` tar that passes, drops or keeps (small) entries as they
//! arrive, and the chooser that decides, in that one pass, which `layer.tar` entries the
//! target already holds.
//!
//! Which directory is which layer, before its `layer.tar` arrives: a legacy save (moby
//! before 25) names each layer directory by its v1 ID, the SHA-256 of the layer's v1
//! config with `layer_id` (the chain ID) and `parent` (a digest) added and `id` left
//! out, keys sorted (moby image/v1/imagev1.go `CreateID`, image/tarexport/save.go); the
//! directory's `json` holds that config and comes before its `layer.tar` (tar order is
//! by name). So a directory is identified by reproducing its name from its `json` with
//! each chain ID: a match is proof. An OCI save (moby 25+) names layer blobs by their
//! digest, the diff ID itself. Anything unidentified passes: at worst a layer the target
//! has travels again.
//!
//! Why dropping is sound: `docker load` (moby image/tarexport/load.go) looks each layer's
//! chain ID up in the target's layer store and opens `<dir>/layer.tar` only when it is
//! missing; the per-layer `json`/`VERSION` files are read only by the pre-1.10 format,
//! which a tar with manifest.json never takes.
//!
//! Never buffers a layer: it holds at most one entry's tar headers (extension headers are
//! bounded) and the kept entries (small, bounded in all); every other byte passes
//! through or is dropped as it arrives.

use std::collections::{BTreeMap, HashMap, HashSet};

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

/// The position in `chains` of the legacy save directory `dir`, from its `json`: the
/// chain ID with which moby's v1 ID of that config is `dir` (see the module doc). Layers
/// below the top are named from their config without `os` (moby sets it afterwards);
/// both forms are tried. `None` when no chain reproduces the name.
pub fn legacy_position(dir: &str, json: &[u8], chains: &[String]) -> Option<usize> {
    use serde_json::value::RawValue;
    let map: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(json).ok()?;
    let parent: Option<String> = match map.get("parent") {
        Some(p) => Some(serde_json::from_str(p.get()).ok()?),
        None => None,
    };
    for with_os in [false, true] {
        let mut fields: BTreeMap<&str, String> = map
            .iter()
            .filter(|(k, _)| *k != "id" && (with_os || *k != "os"))
            .map(|(k, v)| (k.as_str(), v.get().to_string()))
            .collect();
        if let Some(p) = &parent {
            fields.insert("parent", format!("\"sha256:{p}\""));
        }
        for (i, chain) in chains.iter().enumerate() {
            fields.insert("layer_id", format!("\"{chain}\""));
            let mut text = String::from("{");
            for (n, (k, v)) in fields.iter().enumerate() {
                if n > 0 {
                    text.push(',');
                }
                text.push_str(&serde_json::to_string(k).ok()?);
                text.push(':');
                text.push_str(v);
            }
            text.push('}');
            if crate::digest::hex(&Sha256::digest(text.as_bytes())) == dir {
                return Some(i);
            }
        }
    }
    None
}

/// An entry of the tar as the chooser sees it: its path, its size, and the entries
/// kept so far (by path).
pub struct Entry<'a> {
    pub path: &'a str,
    pub size: u64,
    pub kept: &'a HashMap<String, Vec<u8>>,
}

/// What the filter does with one entry, chosen from its header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Pass,
    Drop,
    /// Pass it on and keep a copy (bounded).
    PassKeep,
}

impl Action {
    fn passes(self) -> bool {
        matches!(self, Action::Pass | Action::PassKeep)
    }
    fn keeps(self) -> bool {
        matches!(self, Action::PassKeep)
    }
}

enum State {
    /// Filling a 512-byte header block.
    Header,
    /// Reading an extension header's data (held, with its header, in `held`).
    Extension { remaining: u64, padded: u64 },
    /// An entry's data and padding (`path`: the entry being kept).
    Data {
        remaining: u64,
        data_left: u64,
        action: Action,
        path: Option<String>,
    },
    /// After the end-of-archive block: pass everything.
    Trailer,
}

/// A streaming tar filter: feed it chunks, it returns what to pass on. The chooser sees
/// each entry's header; an error from it ends the filter with that error.
pub struct TarFilter<F: FnMut(&Entry) -> Result<Action, String>> {
    choose: F,
    state: State,
    block: Vec<u8>,
    /// Extension headers and their data waiting for the entry they describe.
    held: Vec<u8>,
    /// A path given by a PAX `path` record or a GNU long name.
    long_name: Option<String>,
    /// Kept entries by path, and their bytes in all (bounded by `MAX_HELD`).
    kept: HashMap<String, Vec<u8>>,
    kept_bytes: u64,
    pub dropped: u64,
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

impl<F: FnMut(&Entry) -> Result<Action, String>> TarFilter<F> {
    pub fn new(choose: F) -> Self {
        Self {
            choose,
            state: State::Header,
            block: Vec::with_capacity(BLOCK),
            held: Vec::new(),
            long_name: None,
            kept: HashMap::new(),
            kept_bytes: 0,
            dropped: 0,
        }
    }

    /// A kept entry's bytes.
    #[cfg(test)]
    pub fn kept(&self, path: &str) -> Option<&[u8]> {
        self.kept.get(path).map(Vec::as_slice)
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
                    path,
                } => {
                    let take = (*remaining).min(chunk.len() as u64) as usize;
                    let bytes = &chunk[..take];
                    if action.passes() {
                        out.extend_from_slice(bytes);
                    } else {
                        self.dropped += take as u64;
                    }
                    if let Some(p) = path {
                        let useful = (*data_left).min(take as u64) as usize;
                        self.kept
                            .entry(p.clone())
                            .or_default()
                            .extend_from_slice(&bytes[..useful]);
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
        let path = name.trim_start_matches("./").to_string();
        let action = (self.choose)(&Entry {
            path: &path,
            size,
            kept: &self.kept,
        })?;
        if action.keeps() {
            self.kept_bytes += size;
            if self.kept_bytes > MAX_HELD {
                return Err(format!(
                    "{name} in the export is {size} bytes, over what is kept"
                ));
            }
            self.kept
                .insert(path.clone(), Vec::with_capacity(size as usize));
        }
        if action.passes() {
            out.append(&mut self.held);
            out.extend_from_slice(&block);
        } else {
            self.dropped += (self.held.len() + BLOCK) as u64;
            self.held.clear();
        }
        let p = padded(size);
        self.state = if p == 0 {
            State::Header
        } else {
            State::Data {
                remaining: p,
                data_left: size,
                action,
                path: action.keeps().then_some(path),
            }
        };
        Ok(())
    }

    /// Whether the whole archive was seen (its end-of-archive block).
    #[cfg(test)]
    pub fn complete(&self) -> bool {
        matches!(self.state, State::Trailer)
    }
}

/// Decides, entry by entry in one pass over a `docker save` tar, which layers travel:
/// `present` holds the chain IDs the target has. Counts what it passes of layers, and
/// refuses (an error) once that would exceed `budget` bytes.
pub struct LayerChooser {
    diff_ids: Vec<String>,
    chains: Vec<String>,
    present: HashSet<String>,
    budget: Option<u64>,
    /// Bytes of `layer.tar` (or layer blob) entries passed.
    pub layer_bytes: u64,
    /// Layers left out because the target has them.
    pub dropped_layers: usize,
    /// Set when the budget was exceeded: (bytes the layers needed so far, budget).
    pub over: Option<(u64, u64)>,
}

impl LayerChooser {
    pub fn new(diff_ids: Vec<String>, present: HashSet<String>, budget: Option<u64>) -> Self {
        Self {
            chains: chain_ids(&diff_ids),
            diff_ids,
            present,
            budget,
            layer_bytes: 0,
            dropped_layers: 0,
            over: None,
        }
    }

    fn present_at(&self, i: usize) -> bool {
        self.chains.get(i).is_some_and(|c| self.present.contains(c))
    }

    pub fn choose(&mut self, e: &Entry) -> Result<Action, String> {
        let mut parts = e.path.splitn(3, '/');
        let layer = match (parts.next(), parts.next(), parts.next()) {
            // Legacy: `<v1 id>/json` is kept to identify `<v1 id>/layer.tar`.
            (Some(_), Some("json"), None) => return Ok(Action::PassKeep),
            (Some(dir), Some("layer.tar"), None) => e
                .kept
                .get(&format!("{dir}/json"))
                .and_then(|json| legacy_position(dir, json, &self.chains)),
            // OCI: layer blobs are named by their diff ID; other blobs are small.
            (Some("blobs"), Some("sha256"), Some(hex)) => {
                let digest = format!("sha256:{hex}");
                match self.diff_ids.iter().position(|d| *d == digest) {
                    Some(i) => Some(i),
                    None => return Ok(Action::Pass),
                }
            }
            _ => return Ok(Action::Pass),
        };
        if layer.is_some_and(|i| self.present_at(i)) {
            self.dropped_layers += 1;
            return Ok(Action::Drop);
        }
        self.layer_bytes += e.size;
        if let Some(budget) = self.budget {
            if self.layer_bytes > budget {
                self.over = Some((self.layer_bytes, budget));
                return Err(format!(
                    "the image's new layers need more than the {budget} bytes the host can spare"
                ));
            }
        }
        Ok(Action::Pass)
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

    // Two layer directories of a `docker save` by Docker 20.10 on this project's test
    // machine (a stand-in image's bottom two layers), with their diff IDs.
    const DIR0: &str = "4cf9dd27ebe29cc42e35594968571a9c3ea08efdb07b2dad5a749bbb12d0c14b";
    const DIR1: &str = "efabe246fa7c6d2a826b56f33b6e71ed9110b72a34609ec6f1dd9dab0a51a363";
    const CC: &str = r#""container_config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null}"#;

    fn json0() -> String {
        format!(r#"{{"id":"{DIR0}","created":"1970-01-01T00:00:00Z",{CC},"os":"linux"}}"#)
    }
    fn json1() -> String {
        format!(
            r#"{{"id":"{DIR1}","parent":"{DIR0}","created":"1970-01-01T00:00:00Z",{CC},"os":"linux"}}"#
        )
    }
    fn diff_ids() -> Vec<String> {
        vec![
            "sha256:464b1a5b8cec8b7bb121b9e81a02d0bb655b0e2da0f4beae6b544416273ecef5".into(),
            "sha256:37322c01594d72772dc9515314637ac22d8f543f8e107a13a207f9fb1cc41649".into(),
        ]
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
    fn legacy_directories_are_named_from_their_json_and_chain_id() {
        let chains = chain_ids(&diff_ids());
        assert_eq!(legacy_position(DIR0, json0().as_bytes(), &chains), Some(0));
        assert_eq!(legacy_position(DIR1, json1().as_bytes(), &chains), Some(1));
        // Another chain, or a changed config, names another directory: no match.
        assert_eq!(
            legacy_position(DIR1, json1().as_bytes(), &chains[..1]),
            None
        );
        let changed = json1().replace("1970-01-01", "1970-01-02");
        assert_eq!(legacy_position(DIR1, changed.as_bytes(), &chains), None);
        assert_eq!(legacy_position(DIR1, b"not json", &chains), None);
    }

    fn legacy_save() -> Vec<u8> {
        let (j0, j1) = (json0(), json1());
        tar_of(&[
            (&format!("{DIR0}/VERSION"), b"1.0"),
            (&format!("{DIR0}/json"), j0.as_bytes()),
            (&format!("{DIR0}/layer.tar"), &[1u8; 5000]),
            ("config.json", b"{}"),
            (&format!("{DIR1}/VERSION"), b"1.0"),
            (&format!("{DIR1}/json"), j1.as_bytes()),
            (&format!("{DIR1}/layer.tar"), &[2u8; 700]),
            ("manifest.json", b"[]"),
        ])
    }

    fn run(src: &[u8], chunk: usize, chooser: &mut LayerChooser) -> Result<Vec<String>, String> {
        let mut f = TarFilter::new(|e| chooser.choose(e));
        let mut out = Vec::new();
        for c in src.chunks(chunk) {
            out.extend(f.push(c)?);
        }
        assert!(f.complete());
        assert_eq!(out.len() as u64 + f.dropped, src.len() as u64);
        Ok(names(&out).into_iter().map(|(n, _)| n).collect())
    }

    #[test]
    fn one_pass_leaves_out_the_layers_the_target_has_in_any_chunking() {
        let chains = chain_ids(&diff_ids());
        let present: HashSet<String> = [chains[0].clone()].into();
        for chunk in [1, 7, 512, 513, 4096, 1 << 20] {
            let mut c = LayerChooser::new(diff_ids(), present.clone(), None);
            let got = run(&legacy_save(), chunk, &mut c).unwrap();
            assert!(
                !got.contains(&format!("{DIR0}/layer.tar")),
                "chunk {chunk}: {got:?}"
            );
            assert!(got.contains(&format!("{DIR1}/layer.tar")));
            assert!(
                got.contains(&format!("{DIR0}/json")) && got.contains(&"manifest.json".to_string())
            );
            assert_eq!((c.dropped_layers, c.layer_bytes), (1, 700), "chunk {chunk}");
        }
        // Nothing present: everything travels.
        let mut c = LayerChooser::new(diff_ids(), HashSet::new(), None);
        let got = run(&legacy_save(), 4096, &mut c).unwrap();
        assert_eq!(got.len(), 8);
        assert_eq!(c.layer_bytes, 5700);
    }

    #[test]
    fn a_layer_over_the_budget_stops_the_stream() {
        let mut c = LayerChooser::new(diff_ids(), HashSet::new(), Some(5000));
        let e = run(&legacy_save(), 4096, &mut c).unwrap_err();
        assert!(e.contains("5000 bytes"), "{e}");
        assert_eq!(c.over, Some((5700, 5000)));
        let mut c = LayerChooser::new(diff_ids(), HashSet::new(), Some(5700));
        assert!(run(&legacy_save(), 4096, &mut c).is_ok());
    }

    #[test]
    fn oci_layer_blobs_are_named_by_their_diff_id() {
        let ids = diff_ids();
        let (h0, h1) = (&ids[0][7..], &ids[1][7..]);
        let src = tar_of(&[
            (&format!("blobs/sha256/{h0}"), &[1u8; 900]),
            (&format!("blobs/sha256/{h1}"), &[2u8; 30]),
            ("blobs/sha256/0000", b"{\"config\":1}"),
            ("index.json", b"{}"),
        ]);
        let chains = chain_ids(&ids);
        let mut c = LayerChooser::new(ids.clone(), [chains[0].clone()].into(), None);
        let got = run(&src, 100, &mut c).unwrap();
        assert_eq!(
            got,
            [
                format!("blobs/sha256/{h1}"),
                "blobs/sha256/0000".into(),
                "index.json".into()
            ]
        );
        assert_eq!(c.layer_bytes, 30);
    }

    #[test]
    fn keeps_an_entry_it_passes() {
        let src = tar_of(&[
            ("x/layer.tar", &[1u8; 2000]),
            ("manifest.json", b"[{\"Layers\":[\"x/layer.tar\"]}]"),
        ]);
        let mut f = TarFilter::new(|e| {
            Ok(if e.path == "manifest.json" {
                Action::PassKeep
            } else {
                Action::Drop
            })
        });
        let mut out = Vec::new();
        for c in src.chunks(100) {
            out.extend(f.push(c).unwrap());
        }
        assert!(f.complete());
        assert_eq!(names(&out).len(), 1);
        assert_eq!(
            f.kept("manifest.json").unwrap(),
            b"[{\"Layers\":[\"x/layer.tar\"]}]"
        );
    }

    #[test]
    fn long_names_are_seen_whole() {
        let long = format!("{}/layer.tar", "d".repeat(120));
        let src = tar_of(&[(&long, b"long name, dropped"), ("keep", b"k")]);
        let mut f = TarFilter::new(|e| {
            Ok(if e.path == long {
                Action::Drop
            } else {
                Action::Pass
            })
        });
        let mut out = Vec::new();
        for c in src.chunks(3) {
            out.extend(f.push(c).unwrap());
        }
        let got: Vec<String> = names(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(got, ["keep"]);
    }
}
