//! Media in a volume on an environment's engine, reached through the Docker API only: a
//! short-lived helper container (of the db's image, which that engine always has)
//! mounts the volume read-only; `find` in it lists the files, and the engine's archive
//! endpoint streams them out as tar, parsed as it arrives (bounded memory, no copy on
//! the host). The helper has no network and is removed by [`VolumeMedia::close`].
//!
//! Nothing here writes to the volume.

use std::collections::HashMap;

use futures_util::StreamExt;

use super::file::{valid_path, MediaFile};
use super::source::{Listing, Reader};
use crate::engine::Engine;

/// Where the helper mounts the volume.
pub(super) const MOUNT: &str = "/countable-media";

/// Lists regular files (not following links) as `<size> <mtime> <path>\0`, with GNU
/// find's `-printf` where there is one, else with `stat` (busybox images).
const LIST_SCRIPT: &str = r#"cd "$1" || exit 3
if find . -maxdepth 0 -printf '' >/dev/null 2>&1; then
  exec find . -type f -printf '%s %T@ %P\0'
fi
exec find . -type f -exec sh -c 'for f do s=$(stat -c "%s %Y" "$f") || exit 1; printf "%s %s\0" "$s" "${f#./}"; done' sh {} +"#;

/// Reading a file from the volume costs a request: reading everything in one stream
/// is cheaper once the files wanted cost more requests than the bytes unwanted.
const REQUEST_COST: u64 = 256 * 1024;

pub struct VolumeMedia {
    pub(super) engine: Engine,
    /// The helper container's ID.
    pub(super) helper: String,
    /// The volume's name on the engine.
    pub volume: String,
}

impl VolumeMedia {
    /// Start the helper `name` of `image` on `engine`, with `volume` mounted read-only.
    pub async fn open(
        engine: &Engine,
        volume: &str,
        image: &str,
        name: &str,
    ) -> anyhow::Result<Self> {
        Self::start(engine, volume, image, name, ":ro").await
    }

    /// [`Self::open`], with the volume mounted read-write (for [`super::write`]).
    pub async fn open_writable(
        engine: &Engine,
        volume: &str,
        image: &str,
        name: &str,
    ) -> anyhow::Result<Self> {
        Self::start(engine, volume, image, name, "").await
    }

    async fn start(
        engine: &Engine,
        volume: &str,
        image: &str,
        name: &str,
        mode: &str,
    ) -> anyhow::Result<Self> {
        let helper = engine
            .run_helper(name, image, &[format!("{volume}:{MOUNT}{mode}")])
            .await?;
        Ok(Self {
            engine: engine.clone(),
            helper,
            volume: volume.to_string(),
        })
    }

    /// Remove the helper.
    pub async fn close(self) {
        let _ = self.engine.remove(&self.helper).await;
    }

    /// Every regular file in the volume.
    pub async fn list(&self) -> anyhow::Result<Listing> {
        let mut out = Vec::new();
        let (code, stderr, written) = self
            .engine
            .exec_to_writer(
                &self.helper,
                &["sh", "-c", LIST_SCRIPT, "sh", MOUNT],
                &mut out,
            )
            .await?;
        written?;
        if code != 0 {
            return Err(super::MediaError::List {
                place: format!("volume {}", self.volume),
                message: stderr.trim().to_string(),
            }
            .into());
        }
        Ok(parse_listing(&out))
    }

    /// One file's content; `None` when it is gone.
    pub async fn open_file(&self, path: &str) -> anyhow::Result<Option<Reader>> {
        let Some(tar) = self
            .engine
            .download(&self.helper, &format!("{MOUNT}/{path}"))
            .await?
        else {
            return Ok(None);
        };
        let mut archive = tokio_tar::Archive::new(tar);
        let mut entries = archive.entries()?;
        while let Some(entry) = entries.next().await {
            let entry = entry?;
            if entry.header().entry_type().is_file() {
                return Ok(Some(Box::pin(entry)));
            }
        }
        Ok(None)
    }

    /// The whole volume as one tar stream, when reading `wanted` (of files of
    /// `listed_bytes` in all) one request a file would cost more than reading
    /// everything once.
    pub async fn whole_if_cheaper(
        &self,
        wanted: &[MediaFile],
        listed_bytes: u64,
    ) -> anyhow::Result<Option<Entries>> {
        let want: u64 = wanted.iter().map(|f| f.size + REQUEST_COST).sum();
        if wanted.is_empty() || want < listed_bytes + REQUEST_COST {
            return Ok(None);
        }
        let Some(tar) = self.engine.download(&self.helper, MOUNT).await? else {
            return Ok(None);
        };
        Ok(Some(Entries::new(tar, wanted)?))
    }
}

/// The wanted files of the volume's tar stream, in the stream's order.
pub struct Entries {
    entries: tokio_tar::Entries<crate::engine::TarStream>,
    /// Files not met yet.
    pub wanted: HashMap<String, MediaFile>,
}

impl Entries {
    /// The files of `wanted` in `tar`, the engine's archive of the mount point.
    fn new(tar: crate::engine::TarStream, wanted: &[MediaFile]) -> std::io::Result<Self> {
        let mut archive = tokio_tar::Archive::new(tar);
        Ok(Self {
            entries: archive.entries()?,
            wanted: wanted.iter().map(|f| (f.path.clone(), f.clone())).collect(),
        })
    }

    /// The next wanted file (its size and mtime as the archive says) and its content;
    /// read it before asking for the next one. `None` at the end of the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<(MediaFile, Reader)>> {
        while let Some(entry) = self.entries.next().await {
            let entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry.path()?.to_string_lossy().into_owned();
            // Named below the mount point's own name: `countable-media/a/b.jpg`.
            let Some((_, path)) = name.split_once('/') else {
                continue;
            };
            let Some(mut file) = self.wanted.remove(path) else {
                continue;
            };
            file.size = entry.header().entry_size()?;
            file.mtime = entry.header().mtime()? as i64;
            return Ok(Some((file, Box::pin(entry))));
        }
        Ok(None)
    }
}

/// `<size> <mtime> <path>\0` records, as [`LIST_SCRIPT`] prints them; paths countable
/// cannot take (not UTF-8, or not a valid media path) are set aside.
fn parse_listing(out: &[u8]) -> Listing {
    let mut listing = Listing::default();
    for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let text = String::from_utf8_lossy(record);
        let mut parts = text.splitn(3, ' ');
        let (Some(size), Some(mtime), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            listing.skipped.push(text.into_owned());
            continue;
        };
        let size = size.parse::<u64>();
        // GNU find prints fractions of a second (`1733377020.5238`); whole seconds count.
        let mtime = mtime.parse::<f64>().map(|t| t.floor() as i64);
        match (size, mtime) {
            (Ok(size), Ok(mtime)) if valid_path(path) && std::str::from_utf8(record).is_ok() => {
                listing.files.push(MediaFile {
                    path: path.to_string(),
                    size,
                    mtime,
                    sha256: None,
                    etag: None,
                })
            }
            _ => listing.skipped.push(path.to_string()),
        }
    }
    listing.files.sort_by(|a, b| a.path.cmp(&b.path));
    listing
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn listed(path: &str) -> MediaFile {
        MediaFile {
            path: path.into(),
            size: 0,
            mtime: 0,
            sha256: None,
            etag: None,
        }
    }

    /// A tar as the engine's archive endpoint sends one for the mount point.
    fn archive() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], kind: tar::EntryType| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mtime(1_767_225_600);
            h.set_mode(0o644);
            if kind == tar::EntryType::Link {
                h.set_link_name("countable-media/a b.jpg").unwrap();
            }
            b.append_data(&mut h, path, data).unwrap();
        };
        add("countable-media/", b"", tar::EntryType::Directory);
        add("countable-media/a b.jpg", b"jpeg", tar::EntryType::Regular);
        add(
            "countable-media/skip.txt",
            b"not wanted",
            tar::EntryType::Regular,
        );
        add(
            "countable-media/deep/er/empty",
            b"",
            tar::EntryType::Regular,
        );
        add("countable-media/same", b"", tar::EntryType::Link);
        b.into_inner().unwrap()
    }

    #[tokio::test]
    async fn the_wanted_files_of_the_archive_in_its_order() {
        let wanted = [listed("deep/er/empty"), listed("a b.jpg"), listed("same")];
        let mut e = Entries::new(Box::pin(std::io::Cursor::new(archive())), &wanted).unwrap();
        let mut got = Vec::new();
        while let Some((file, mut reader)) = e.next().await.unwrap() {
            let mut content = Vec::new();
            reader.read_to_end(&mut content).await.unwrap();
            assert_eq!(file.size, content.len() as u64);
            assert_eq!(file.mtime, 1_767_225_600);
            got.push((file.path, content));
        }
        assert_eq!(
            got,
            [
                ("a b.jpg".to_string(), b"jpeg".to_vec()),
                ("deep/er/empty".to_string(), Vec::new())
            ]
        );
        // A hard link has no content in the stream: left for a read of its own.
        assert_eq!(e.wanted.keys().collect::<Vec<_>>(), ["same"]);
    }

    #[test]
    fn listings_of_gnu_find_and_stat() {
        let out = b"12 1733377020.5238 photos/a b.jpg\x000 1733377000 empty\x004 1700000000.0000000000 d\xffx\x003 1 two\nlines\x00";
        let l = parse_listing(out);
        let got: Vec<(&str, u64, i64)> = l
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.size, f.mtime))
            .collect();
        assert_eq!(
            got,
            [
                ("empty", 0, 1733377000),
                ("photos/a b.jpg", 12, 1733377020),
                ("two\nlines", 3, 1)
            ]
        );
        assert_eq!(
            l.skipped.len(),
            1,
            "a name that is not UTF-8: {:?}",
            l.skipped
        );
    }
}
