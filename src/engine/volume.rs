//! Volumes and files in containers, for reading an environment's media through the
//! Docker API: find a compose project's volume, and stream a path out of a container
//! as the engine's tar archive (the endpoint behind `docker cp`); and for pull-media,
//! create a compose project's volume the way compose would, and stream a tar archive
//! into a container. Still the Docker API seam: it knows no media policy.

use std::collections::HashMap;

use bollard::query_parameters::{
    DownloadFromContainerOptions, ListVolumesOptions, UploadToContainerOptions,
};
use futures_util::{StreamExt, TryStreamExt};

use super::{Engine, EngineError, PROJECT_LABEL};

const VOLUME_LABEL: &str = "com.docker.compose.volume";
const VERSION_LABEL: &str = "com.docker.compose.version";

/// A tar stream out of a container.
pub type TarStream = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Engine {
    /// The engine's name of volume `volume` of compose project `project`: the one
    /// compose labelled so, else one named `<project>_<volume>` (compose's own naming),
    /// or `named` when the compose file gives the volume a `name:`. `None` when there
    /// is no such volume (compose makes it when a service that mounts it starts).
    pub async fn compose_volume(
        &self,
        project: &str,
        volume: &str,
        named: Option<&str>,
    ) -> Result<Option<String>, EngineError> {
        if let Some(name) = named {
            return self.volume_exists(name).await;
        }
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{PROJECT_LABEL}={project}"),
                format!("{VOLUME_LABEL}={volume}"),
            ],
        )]);
        let listed = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await?;
        if let Some(v) = listed.volumes.unwrap_or_default().into_iter().next() {
            return Ok(Some(v.name));
        }
        self.volume_exists(&format!("{project}_{volume}")).await
    }

    /// Create volume `volume` of compose project `project` as compose would: named
    /// `named` (the compose file's `name:`) or `<project>_<volume>`, with compose's
    /// labels (`compose_version` is the version of compose that is to adopt it), so a
    /// later `docker compose up` takes it as its own without a warning. Its name.
    pub async fn create_compose_volume(
        &self,
        project: &str,
        volume: &str,
        named: Option<&str>,
        compose_version: &str,
    ) -> Result<String, EngineError> {
        let name = named
            .map(String::from)
            .unwrap_or_else(|| format!("{project}_{volume}"));
        let labels = HashMap::from([
            (PROJECT_LABEL.to_string(), project.to_string()),
            (VOLUME_LABEL.to_string(), volume.to_string()),
            (VERSION_LABEL.to_string(), compose_version.to_string()),
        ]);
        let created = self
            .docker
            .create_volume(bollard::models::VolumeCreateOptions {
                name: Some(name),
                labels: Some(labels),
                ..Default::default()
            })
            .await?;
        Ok(created.name)
    }

    /// Unpack the tar archive `tar` (streamed: it is sent as it is produced) under
    /// `dir` in `container`; the entries' owners, modes and times are kept.
    pub async fn upload_tar<S>(&self, container: &str, dir: &str, tar: S) -> Result<(), EngineError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
    {
        self.docker
            .upload_to_container(
                container,
                Some(UploadToContainerOptions {
                    path: dir.to_string(),
                    ..Default::default()
                }),
                bollard::body_try_stream(tar),
            )
            .await?;
        Ok(())
    }

    /// `name`, when this engine has a volume so named.
    async fn volume_exists(&self, name: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(v.name)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `path` in `container` (running or not; its volumes included) as the engine's
    /// tar archive of it, streamed: a directory's entries are named below the
    /// directory's own name, a file's entry by its file name. `None` when the path
    /// does not exist.
    pub async fn download(
        &self,
        container: &str,
        path: &str,
    ) -> Result<Option<TarStream>, EngineError> {
        let mut stream = self
            .docker
            .download_from_container(
                container,
                Some(DownloadFromContainerOptions {
                    path: path.to_string(),
                }),
            )
            .boxed();
        // The answer's status comes with its first chunk.
        let first = match stream.next().await {
            None => bytes::Bytes::new(),
            Some(Ok(b)) => b,
            Some(Err(e)) if not_found(&e) => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
        };
        let rest = stream.map_err(std::io::Error::other);
        let all = futures_util::stream::once(async move { Ok(first) }).chain(rest);
        Ok(Some(Box::pin(tokio_util::io::StreamReader::new(all))))
    }
}
