//! What a deploy asks of an environment's engine beyond finding and exec'ing into
//! containers: ship an image with byte progress, write small files into a container,
//! follow a container's log, stop one gracefully, and list or remove release images by
//! label. Still the Docker API seam: it knows no project, release or policy.

use std::collections::{HashMap, HashSet};

use bollard::query_parameters::{
    InspectContainerOptions, ListImagesOptions, LogsOptions, RemoveImageOptions,
    StopContainerOptions,
};
use futures_util::StreamExt;

use super::{layers, Engine, EngineError};

/// A `docker save` stream countable cannot read as a tar.
fn bad_export(why: String) -> EngineError {
    EngineError::Api(bollard::errors::Error::IOError {
        err: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the image export: {why}"),
        ),
    })
}

/// A file to place in a container: its path relative to the target directory, its
/// bytes and its mode.
pub struct FileEntry {
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// What [`Engine::ship_image`] did.
#[derive(Debug, Clone, Default)]
pub struct Shipped {
    /// Bytes of the (filtered) export sent.
    pub sent: u64,
    /// Of those, the layers' own bytes: what the engine stores.
    pub layer_bytes: u64,
    /// Layers left out because the engine had them.
    pub layers_left_out: usize,
}

/// An image on an engine, as a prune sees it.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub id: String,
    pub tags: Vec<String>,
    pub labels: HashMap<String, String>,
    pub size: u64,
}

/// A container's state as the health gate reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// `running`, `exited`, …
    pub state: String,
    /// `starting`, `healthy`, `unhealthy`, or none without a healthcheck.
    pub health: Option<String>,
    pub exit_code: Option<i64>,
    /// The last healthcheck's output, for a report.
    pub last_check: Option<String>,
}

impl Engine {
    /// Copy `image` (a name: tags travel with it) from `from` into this engine in one
    /// streamed pass; `on_bytes` sees the running total sent.
    ///
    /// Layer-aware: the layers this engine already holds (by chain ID, from its images'
    /// `RootFS.Layers`) are left out of the export as it streams (see `layers`), and
    /// `docker load` reuses them. With `budget`, the load is stopped before the layers
    /// sent would exceed it ([`EngineError::NoRoom`]). Should a filtered load fail (a
    /// layer pruned meanwhile), the whole image is sent.
    pub async fn ship_image<F>(
        &self,
        from: &Engine,
        image: &str,
        budget: Option<u64>,
        on_bytes: F,
    ) -> Result<Shipped, EngineError>
    where
        F: Fn(u64) + Send + Sync + 'static,
    {
        let on_bytes = std::sync::Arc::new(on_bytes);
        let diff_ids = from
            .docker
            .inspect_image(image)
            .await?
            .root_fs
            .and_then(|r| r.layers)
            .unwrap_or_default();
        let present = self.layer_chains().await?;
        let shared = layers::chain_ids(&diff_ids)
            .iter()
            .any(|c| present.contains(c));
        let chooser = layers::LayerChooser::new(diff_ids.clone(), present, budget);
        match self
            .load_filtered(from, image, chooser, on_bytes.clone())
            .await
        {
            Err(e) if shared && !matches!(e, EngineError::NoRoom { .. }) => {
                let all = layers::LayerChooser::new(diff_ids, HashSet::new(), budget);
                self.load_filtered(from, image, all, on_bytes).await
            }
            r => r,
        }
    }

    /// Free bytes on the filesystem of this engine's data root (its images, containers
    /// and volumes), and the root's path: `df` in a short-lived helper container of
    /// `helper_image` (any image here with a POSIX `df`) that mounts the root read-only.
    /// `None` for the bytes when `df` gave nothing readable.
    pub async fn data_root_free(
        &self,
        helper_name: &str,
        helper_image: &str,
    ) -> Result<(String, Option<u64>), EngineError> {
        let root = self
            .docker
            .info()
            .await?
            .docker_root_dir
            .unwrap_or_else(|| "/var/lib/docker".into());
        let id = self
            .run_helper(
                helper_name,
                helper_image,
                &[format!("{root}:/countable-data-root:ro")],
            )
            .await?;
        let out = self
            .exec_capture(&id, &["df", "-Pk", "/countable-data-root"], &[])
            .await;
        let _ = self.remove(&id).await;
        let out = out?;
        let free = out
            .stdout
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|k| k.parse::<u64>().ok())
            .filter(|_| out.code == 0)
            .map(|k| k * 1024);
        Ok((root, free))
    }

    /// The chain IDs of every layer of every image on this engine.
    async fn layer_chains(&self) -> Result<HashSet<String>, EngineError> {
        let mut out = HashSet::new();
        for summary in self.docker.list_images(None::<ListImagesOptions>).await? {
            let layers = match self.docker.inspect_image(&summary.id).await {
                Ok(i) => i.root_fs.and_then(|r| r.layers).unwrap_or_default(),
                // Removed since the listing: it has nothing to offer.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => continue,
                Err(e) => return Err(e.into()),
            };
            out.extend(layers::chain_ids(&layers));
        }
        Ok(out)
    }

    /// Export `image` from `from`, filtered by `chooser` as it streams, and load it here.
    async fn load_filtered<F>(
        &self,
        from: &Engine,
        image: &str,
        chooser: layers::LayerChooser,
        on_bytes: std::sync::Arc<F>,
    ) -> Result<Shipped, EngineError>
    where
        F: Fn(u64) + Send + Sync + 'static,
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let failed: Arc<Mutex<Option<EngineError>>> = Arc::default();
        let sent = Arc::new(AtomicU64::new(0));
        let chooser = Arc::new(Mutex::new(chooser));
        let (failed_in, sent_in, chooser_in) = (failed.clone(), sent.clone(), chooser.clone());
        let mut filter =
            layers::TarFilter::new(move |e| chooser_in.lock().expect("not poisoned").choose(e));
        let source = from.docker.export_image(image).scan((), move |_, chunk| {
            let passed = chunk
                .map_err(EngineError::from)
                .and_then(|bytes| filter.push(&bytes).map_err(bad_export));
            futures_util::future::ready(match passed {
                Ok(bytes) => {
                    let total = sent_in.fetch_add(bytes.len() as u64, Ordering::Relaxed)
                        + bytes.len() as u64;
                    on_bytes(total);
                    Some(bytes::Bytes::from(bytes))
                }
                Err(e) => {
                    *failed_in.lock().expect("not poisoned") = Some(e);
                    None
                }
            })
        });
        let options = bollard::query_parameters::ImportImageOptions {
            quiet: true,
            ..Default::default()
        };
        let mut loaded = self.docker.import_image_stream(options, source, None);
        let mut outcome = Ok(());
        while let Some(r) = loaded.next().await {
            match r {
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
                Ok(info) => {
                    if let Some(err) = info.error_detail.and_then(|d| d.message) {
                        outcome = Err(bollard::errors::Error::DockerStreamError { error: err });
                        break;
                    }
                }
            }
        }
        let c = chooser.lock().expect("not poisoned");
        if let Some((needed, budget)) = c.over {
            return Err(EngineError::NoRoom { needed, budget });
        }
        if let Some(e) = failed.lock().expect("not poisoned").take() {
            return Err(e);
        }
        outcome?;
        Ok(Shipped {
            sent: sent.load(Ordering::Relaxed),
            layer_bytes: c.layer_bytes,
            layers_left_out: c.dropped_layers,
        })
    }

    /// The image's ID, labels and size, or None when this engine lacks it.
    pub async fn image_info(&self, image: &str) -> Result<Option<ImageInfo>, EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(Some(ImageInfo {
                id: i.id.unwrap_or_default(),
                tags: i.repo_tags.unwrap_or_default(),
                labels: i.config.and_then(|c| c.labels).unwrap_or_default(),
                size: i.size.unwrap_or(0).max(0) as u64,
            })),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Images carrying `label=value`.
    pub async fn images_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<ImageInfo>, EngineError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{label}={value}")])]);
        let list = self
            .docker
            .list_images(Some(ListImagesOptions {
                all: false,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        Ok(list
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                tags: i.repo_tags,
                labels: i.labels,
                size: i.size.max(0) as u64,
            })
            .collect())
    }

    /// Remove an image by ID or name (its tags too).
    pub async fn remove_image(&self, image: &str) -> Result<(), EngineError> {
        self.docker
            .remove_image(
                image,
                Some(RemoveImageOptions {
                    force: true,
                    noprune: false,
                }),
                None,
            )
            .await?;
        Ok(())
    }

    /// Unpack `files` under `dir` in `container` (a small tar built in memory: these
    /// are configuration files, never data).
    pub async fn put_files(
        &self,
        container: &str,
        dir: &str,
        files: &[FileEntry],
    ) -> Result<(), EngineError> {
        let mut builder = tar::Builder::new(Vec::new());
        for f in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(f.bytes.len() as u64);
            header.set_mode(f.mode);
            header.set_mtime(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, &f.path, f.bytes.as_slice())
                .map_err(|e| EngineError::Api(bollard::errors::Error::IOError { err: e }))?;
        }
        let bytes = builder
            .into_inner()
            .map_err(|e| EngineError::Api(bollard::errors::Error::IOError { err: e }))?;
        let whole = futures_util::stream::once(std::future::ready(Ok(bytes.into())));
        self.upload_tar(container, dir, whole).await
    }

    /// Start a helper container of `image` as root, running `sleep`, with `binds`
    /// (`host:container`) and no network; remove it with `remove`.
    pub async fn run_helper(
        &self,
        name: &str,
        image: &str,
        binds: &[String],
    ) -> Result<String, EngineError> {
        use bollard::query_parameters::CreateContainerOptions;
        let _ = self.remove(name).await;
        // An image built by compose carries compose's labels; blanked here, so compose
        // never counts the helper as one of the project's containers.
        let mut labels: HashMap<String, String> = self
            .image_info(image)
            .await?
            .map(|i| i.labels)
            .unwrap_or_default()
            .into_keys()
            .filter(|k| k.starts_with("com.docker.compose."))
            .map(|k| (k, String::new()))
            .collect();
        labels.insert("countable.disposable".into(), "true".into());
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                bollard::models::ContainerCreateBody {
                    image: Some(image.to_string()),
                    user: Some("0".into()),
                    entrypoint: Some(vec!["sleep".into()]),
                    cmd: Some(vec!["600".into()]),
                    network_disabled: Some(true),
                    labels: Some(labels),
                    host_config: Some(bollard::models::HostConfig {
                        binds: Some(binds.to_vec()),
                        network_mode: Some("none".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await?;
        self.start_or_remove(created.id).await
    }

    /// A container's state and health.
    pub async fn health(&self, container: &str) -> Result<Health, EngineError> {
        let c = self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await?;
        let st = c.state.unwrap_or_default();
        let status = st.status.map(|s| s.to_string()).unwrap_or_default();
        let health = st.health.clone();
        Ok(Health {
            exit_code: (status == "exited").then_some(st.exit_code).flatten(),
            state: status,
            health: health
                .as_ref()
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            last_check: health
                .and_then(|h| h.log)
                .and_then(|l| l.last().cloned())
                .and_then(|l| l.output)
                .map(|o| o.trim().to_string()),
        })
    }

    /// Follow a container's output (stdout and stderr) from its start, line by line,
    /// into `tx`; ends when the container stops or the receiver is dropped.
    pub async fn follow_log(&self, container: &str, tx: tokio::sync::mpsc::Sender<String>) {
        let mut stream = self.docker.logs(
            container,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let mut pending: Vec<u8> = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            pending.extend_from_slice(&chunk.into_bytes());
            while let Some(at) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=at).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                if tx.send(text).await.is_err() {
                    return;
                }
            }
            if pending.len() > 64 * 1024 {
                pending.clear();
            }
        }
    }

    /// The last `lines` lines a container printed.
    pub async fn log_tail(&self, container: &str, lines: usize) -> Result<String, EngineError> {
        let mut stream = self.docker.logs(
            container,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: lines.to_string(),
                ..Default::default()
            }),
        );
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?.into_bytes());
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Stop a container: SIGTERM, then SIGKILL after `grace_secs`.
    pub async fn stop(&self, container: &str, grace_secs: i32) -> Result<(), EngineError> {
        match self
            .docker
            .stop_container(
                container,
                Some(StopContainerOptions {
                    t: Some(grace_secs),
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            // Already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The labels of a container.
    pub async fn container_labels(
        &self,
        container: &str,
    ) -> Result<HashMap<String, String>, EngineError> {
        let c = self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await?;
        Ok(c.config.and_then(|c| c.labels).unwrap_or_default())
    }

    /// Give `image` (an ID or name) the name `name:tag` on this engine.
    pub async fn tag(&self, image: &str, name_tag: &str) -> Result<(), EngineError> {
        let (repo, tag) = split_tag(name_tag);
        self.docker
            .tag_image(
                image,
                Some(bollard::query_parameters::TagImageOptions {
                    repo: Some(repo.to_string()),
                    tag: Some(tag.to_string()),
                }),
            )
            .await?;
        Ok(())
    }

    /// Push `image` (`registry/name:tag`) from this engine to its registry; progress
    /// lines go to `on_status`. A registry's refusal is an error.
    pub async fn push(&self, image: &str, on_status: impl Fn(&str)) -> Result<(), EngineError> {
        let (name, tag) = split_tag(image);
        let mut stream = self.docker.push_image(
            name,
            Some(bollard::query_parameters::PushImageOptions {
                tag: Some(tag.to_string()),
                ..Default::default()
            }),
            None,
        );
        while let Some(info) = stream.next().await {
            let info = info?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(EngineError::Api(
                    bollard::errors::Error::DockerStreamError { error: e },
                ));
            }
            if let Some(st) = info.status {
                on_status(&st);
            }
        }
        Ok(())
    }

    /// Pull `image` into this engine from its registry.
    pub async fn pull(&self, image: &str) -> Result<(), EngineError> {
        let (name, tag) = split_tag(image);
        let mut stream = self.docker.create_image(
            Some(bollard::query_parameters::CreateImageOptions {
                from_image: Some(name.to_string()),
                tag: Some(tag.to_string()),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(info) = stream.next().await {
            let info = info?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(EngineError::Api(
                    bollard::errors::Error::DockerStreamError { error: e },
                ));
            }
        }
        Ok(())
    }
}

/// `host:5000/shop-web:prod-3-abc` → (`host:5000/shop-web`, `prod-3-abc`).
fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (image, "latest"),
    }
}
