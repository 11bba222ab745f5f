//! `verify-backup`, the drill that proves a backup: download it (SHA-256 checked against
//! its manifest), restore it into a throwaway database in a disposable container of the
//! environment's db image (never the environment's own database), compare object and
//! row counts with the manifest, read back its media (every file's size and SHA-256
//! against the media manifest, `media::check`), record the outcome beside the backup,
//! and remove the container, whatever happened.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backup::{manifest_key, verified_key, Manifest};
use crate::digest::HashingReader;
use crate::engine::Engine;
use crate::envfile;
use crate::error::Hinted;
use crate::interrupt::Interrupt;
use crate::media::MediaCheck;
use crate::restore::{self, Db, Options, Source};
use crate::store::{Backup, Store};
use crate::ui::Printer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Restored, and everything matched the manifest.
    Passed,
    /// Restored, but there was no manifest to compare with.
    RestoredWithoutManifest,
    /// The checksum, the restore or the counts failed.
    Failed,
}

/// `<key>.verified.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub key: String,
    pub verified_at: String,
    pub countable_version: String,
    pub image: String,
    pub outcome: Outcome,
    pub problems: Vec<String>,
    pub sha256: String,
    pub bytes: u64,
    pub format: Option<String>,
    pub restore_seconds: f64,
    pub total_seconds: f64,
    /// The media check; `None`: the backup has no media manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaCheck>,
}

/// Wait until the server in `container` answers over TCP (not its first-start init
/// server, which only listens on the socket).
async fn wait_ready(engine: &Engine, container: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = engine
            .exec_capture(
                container,
                &[
                    "pg_isready",
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "countable",
                    "-d",
                    "drill",
                ],
                &[],
            )
            .await?;
        if r.code == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the disposable database did not start within 120 s: {}",
                r.stderr.trim()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The image a drill runs: the environment's db image, by name (for people) and by ID
/// (what runs).
#[derive(Debug, Clone)]
pub struct DrillImage {
    pub name: String,
    pub id: String,
}

fn interrupted(what: &str) -> anyhow::Error {
    Hinted::new(
        format!("{what} was interrupted; its disposable container was removed"),
        "run it again when it may finish: `countable verify-backup <env>`",
    )
    .into()
}

/// The engine drills run on: `drill_host` when set, else the one countable runs with
/// (`DOCKER_HOST`, else the local socket).
pub async fn drill_engine(drill_host: Option<&str>) -> anyhow::Result<Engine> {
    Ok(Engine::connect_to(drill_host).await?)
}

/// The image of `container` (the environment's db, on `env_engine`), present on
/// `drill_engine`: copied there from the environment's engine when it lacks it.
pub async fn image_for_drill(
    drill_engine: &Engine,
    env_engine: &Engine,
    container: &str,
    printer: &Printer,
) -> anyhow::Result<DrillImage> {
    let image = DrillImage {
        name: env_engine.image_of(container).await?,
        id: env_engine.image_id_of(container).await?,
    };
    if drill_engine.has_image(&image.id).await? {
        return Ok(image);
    }
    let spinner = printer.spinner(&format!(
        "copying the image {} ({}) from the environment's engine to the drill engine",
        image.name, image.id
    ));
    let interrupt = Interrupt::get()?;
    let copied = tokio::select! {
        r = drill_engine.copy_image_from(env_engine, &image.id) => r.map_err(anyhow::Error::from),
        _ = interrupt.wait() => Err(Hinted::new(
            "copying the drill image was interrupted",
            "run it again when it may finish, or copy the image yourself: `docker -H <docker_host> save IMAGE | docker load`",
        ).into()),
    };
    spinner.finish_and_clear();
    let bytes = copied.map_err(|e| {
        anyhow::Error::from(Hinted::wrap(
            e,
            format!("the drill engine lacks {} and copying it failed", image.name),
            format!("copy it yourself (`docker -H <docker_host> save {} | docker load`) or set `drill_host` in countable.yml to an engine that has it", image.name),
        ))
    })?;
    printer.note(&format!(
        "   copied {} ({}) to the drill engine",
        image.name,
        crate::ui::human_bytes(bytes)
    ));
    Ok(image)
}

/// Drill `backup` from `store` in a disposable container of `image` on `engine` (the
/// drill engine), labelled `countable.drill.for=<of>` (the environment's db container).
pub async fn verify(
    engine: &Engine,
    image: &DrillImage,
    of: &str,
    store: &Store,
    backup: &Backup,
    printer: &Printer,
) -> anyhow::Result<Verification> {
    let interrupt = Interrupt::get()?;
    let started = Instant::now();
    let manifest: Option<Manifest> = match store.get_small(&manifest_key(&backup.key)).await? {
        Some(bytes) => Some(
            serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("the manifest of {} is not valid: {e}", backup.key))?,
        ),
        None => None,
    };
    if manifest.is_none() {
        printer.warn(&format!(
            "{} has no manifest: it will be restored, but nothing can be compared",
            backup.key
        ));
    }
    let name = format!(
        "countable-drill-{}-{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let env = vec![
        format!("POSTGRES_PASSWORD={}", envfile::random_password(24)),
        "POSTGRES_USER=countable".to_string(),
        "POSTGRES_DB=drill".to_string(),
    ];
    let spinner = printer.spinner(&format!(
        "drilling {}: restoring it in a disposable {} container",
        backup.key, image.name
    ));
    // Creating and starting is not raced against the signal: a create request dropped
    // half-way may still make a container after we looked for it. The listener keeps a
    // signal that comes meanwhile, so it is seen right after.
    let created = engine
        .run_disposable(&name, &image.id, &env, &[("countable.drill.for", of)])
        .await
        .map_err(|e| {
            anyhow::Error::from(Hinted::wrap(
                e.into(),
                format!("the disposable drill container of {} did not start", image.name),
                format!("check that the image runs on the drill engine (`docker run --rm {}`), or set `drill_host` in countable.yml to an engine where it does", image.name),
            ))
        });
    let work = async {
        let container = created?;
        if interrupt.hit() {
            return Err(interrupted(&format!("the drill of {}", backup.key)));
        }
        drill(engine, &container, store, backup, manifest.as_ref()).await
    };
    let drilled = tokio::select! {
        r = work => r,
        _ = interrupt.wait() => Err(interrupted(&format!("the drill of {}", backup.key))),
    };
    // Work that ended because of the signal (a decoder that got it too) is no verdict.
    tokio::task::yield_now().await;
    let drilled = if interrupt.hit() {
        Err(interrupted(&format!("the drill of {}", backup.key)))
    } else {
        drilled
    };
    // By name: it also finds a container whose creation was under way when interrupted.
    let _ = engine.remove(&name).await;
    spinner.finish_and_clear();
    let (mut problems, sha256, bytes, format, restore_seconds) = drilled?;
    let media = tokio::select! {
        r = crate::media::check::check(store, backup, printer) => r?,
        _ = interrupt.wait() => return Err(interrupted(&format!("the drill of {}", backup.key))),
    };
    let media = media.map(|(check, damaged)| {
        problems.extend(damaged);
        check
    });
    let outcome = if !problems.is_empty() {
        Outcome::Failed
    } else if manifest.is_none() {
        Outcome::RestoredWithoutManifest
    } else {
        Outcome::Passed
    };
    let v = Verification {
        key: backup.key.clone(),
        verified_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)?,
        countable_version: env!("CARGO_PKG_VERSION").into(),
        image: image.name.clone(),
        outcome,
        problems,
        sha256,
        bytes,
        format,
        restore_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        media,
    };
    store
        .put_small(&verified_key(&backup.key), serde_json::to_vec_pretty(&v)?)
        .await?;
    Ok(v)
}

async fn hash_whole(store: &Store, backup: &Backup) -> anyhow::Result<(String, u64)> {
    use tokio::io::AsyncReadExt;
    let opened = store.open(backup).await?;
    let (mut reader, digest) = HashingReader::new(opened.reader);
    let mut buf = vec![0u8; 256 * 1024];
    while reader.read(&mut buf).await? > 0 {}
    Ok(digest.snapshot())
}

type Drilled = (Vec<String>, String, u64, Option<String>, f64);

async fn drill(
    engine: &Engine,
    container: &str,
    store: &Store,
    backup: &Backup,
    manifest: Option<&Manifest>,
) -> anyhow::Result<Drilled> {
    wait_ready(engine, container).await?;
    let db = Db::discover(engine.clone(), container.to_string()).await?;
    let opened = store.open(backup).await?;
    let (reader, digest) = HashingReader::new(opened.reader);
    let source = Source {
        label: backup.key.clone(),
        reader: Box::pin(reader),
        size: opened.size,
    };
    let opts = Options {
        keep_previous: false,
        jobs: 1,
        fast: true,
        template: None,
    };
    let t = Instant::now();
    let restored = restore::restore_fresh(&db, source, "restored", &opts).await;
    let restore_seconds = t.elapsed().as_secs_f64();
    let (mut sha256, mut bytes) = digest.snapshot();
    if bytes != backup.size {
        // The restore stopped reading early (a tar's trailing blocks, or a failure):
        // hash the whole object in a pass of its own.
        (sha256, bytes) = hash_whole(store, backup).await?;
    }
    let mut problems = Vec::new();
    if let Some(m) = manifest {
        if bytes != m.size || sha256 != m.sha256 {
            problems.push(format!(
                "checksum: the stored object ({bytes} bytes, SHA-256 {sha256}) is not what was backed up ({} bytes, SHA-256 {})",
                m.size, m.sha256
            ));
        }
    }
    let format = match restored {
        Ok(f) => Some(f),
        Err(e) => {
            problems.push(format!("restore failed: {e:#}"));
            None
        }
    };
    if format.is_some() {
        if let Some(m) = manifest {
            let got = db.census("restored").await?;
            problems.extend(m.census.differences(&got));
        }
    }
    Ok((problems, sha256, bytes, format, restore_seconds))
}
