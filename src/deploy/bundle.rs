//! The files of one release directory: the project's compose files, countable's
//! override, the files the services bind-mount from the project (nginx's config, say),
//! and `.env` (mode 0600). Read from the tree the image was built from, in memory:
//! these are small configuration files, bounded in total.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use sha2::Digest;

use crate::engine::FileEntry;
use crate::error::Hinted;

/// The most a release directory may hold: configuration, never data.
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Read `rel` (a file or a directory, recursively) under `root` into `out`.
fn add(root: &Path, rel: &str, out: &mut Vec<FileEntry>, total: &mut u64) -> anyhow::Result<()> {
    let path = root.join(rel);
    let meta =
        std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            add(root, &format!("{rel}/{n}"), out, total)?;
        }
        return Ok(());
    }
    if !meta.is_file() {
        return Ok(());
    }
    *total += meta.len();
    if *total > MAX_BYTES {
        return Err(Hinted::new(
            format!(
                "the files bind-mounted from the project exceed {} MiB (at {rel})",
                MAX_BYTES >> 20
            ),
            "bind-mount configuration only; put data in a named volume",
        )
        .into());
    }
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let mode = if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    };
    out.push(FileEntry {
        path: rel.to_string(),
        bytes,
        mode,
    });
    Ok(())
}

/// The release's files, and per service a hash of what it bind-mounts (a changed
/// file makes compose recreate that service).
pub fn collect(
    root: &Path,
    compose_files: &[String],
    binds: &[(String, String)],
) -> anyhow::Result<(Vec<FileEntry>, BTreeMap<String, String>)> {
    let mut files = Vec::new();
    let mut total = 0u64;
    for f in compose_files {
        add(root, f, &mut files, &mut total)?;
    }
    let mut hashes = BTreeMap::new();
    let mut by_service: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (service, rel) in binds {
        by_service.entry(service).or_default().push(rel);
    }
    for (service, rels) in by_service {
        let mut h = sha2::Sha256::new();
        for rel in rels {
            let start = files.len();
            if !files
                .iter()
                .any(|f| f.path == *rel || f.path.starts_with(&format!("{rel}/")))
            {
                add(root, rel, &mut files, &mut total)?;
            }
            for f in files[start..].iter().chain(
                files[..start]
                    .iter()
                    .filter(|f| f.path == *rel || f.path.starts_with(&format!("{rel}/"))),
            ) {
                h.update(f.path.as_bytes());
                h.update([0]);
                h.update(&f.bytes);
            }
        }
        hashes.insert(service.to_string(), hex(&h.finalize()[..8]));
    }
    Ok((files, hashes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_hashes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("compose.yaml"), "services: {}\n").unwrap();
        std::fs::create_dir(d.path().join("nginx")).unwrap();
        std::fs::write(d.path().join("nginx/default.conf"), "server {}\n").unwrap();
        let binds = vec![("nginx".to_string(), "nginx".to_string())];
        let (files, h1) = collect(d.path(), &["compose.yaml".into()], &binds).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["compose.yaml", "nginx/default.conf"]);
        std::fs::write(
            d.path().join("nginx/default.conf"),
            "server { listen 81; }\n",
        )
        .unwrap();
        let (_, h2) = collect(d.path(), &["compose.yaml".into()], &binds).unwrap();
        assert_ne!(h1["nginx"], h2["nginx"], "a changed file changes the hash");
        let missing = vec![("web".to_string(), "nope.txt".to_string())];
        assert!(collect(d.path(), &["compose.yaml".into()], &missing).is_err());
    }
}
