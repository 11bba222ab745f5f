//! The environment's host, as a deploy changes it: the release directories behind the
//! `current` symlink (written through a short-lived helper container, so any engine
//! countable reaches works, ssh:// or tcp://), nginx's live-release include and its
//! graceful reload, and the containers of one release.
//!
//! It never decides when to switch; `deploy` does.

use anyhow::Context;

use super::settings::{Settings, LABEL_RELEASE};
use crate::engine::{Engine, FileEntry};

/// Where the helper container sees `<release_root>/<compose_project>`.
const MOUNT: &str = "/countable-home";
/// The directory nginx includes `*.conf` from (a volume; see the scaffold).
pub const LIVE_DIR: &str = "/etc/nginx/countable";

/// A helper container on the host with the environment's home directory mounted.
pub struct Home<'a> {
    engine: &'a Engine,
    id: String,
}

impl<'a> Home<'a> {
    /// Start the helper from `image` (any image on the host with a POSIX shell: the
    /// release's own web image).
    pub async fn open(engine: &'a Engine, s: &Settings, image: &str) -> anyhow::Result<Self> {
        let name = format!("{}-countable-home", s.compose_project);
        let id = engine
            .run_helper(&name, image, &[format!("{}:{MOUNT}", s.home())])
            .await
            .with_context(|| {
                format!(
                    "starting a helper container on the host to write {}",
                    s.home()
                )
            })?;
        Ok(Self { engine, id })
    }

    async fn sh(&self, script: &str) -> anyhow::Result<String> {
        let out = self
            .engine
            .exec_capture(&self.id, &["sh", "-c", script], &[])
            .await?;
        if out.code != 0 {
            anyhow::bail!(
                "on the host: `{script}` failed ({}): {}",
                out.code,
                out.stderr.trim()
            );
        }
        Ok(out.stdout)
    }

    /// Write release `n`'s files (replacing a half-written earlier attempt), atomically:
    /// into `releases/<n>.tmp`, then renamed.
    pub async fn write_release(&self, n: u32, files: &[FileEntry]) -> anyhow::Result<()> {
        self.sh(&format!(
            "mkdir -p {MOUNT}/releases && rm -rf {MOUNT}/releases/{n}.tmp {MOUNT}/releases/{n}"
        ))
        .await?;
        let entries: Vec<FileEntry> = files
            .iter()
            .map(|f| FileEntry {
                path: format!("releases/{n}.tmp/{}", f.path),
                bytes: f.bytes.clone(),
                mode: f.mode,
            })
            .collect();
        self.engine.put_files(&self.id, MOUNT, &entries).await?;
        self.sh(&format!(
            "chmod 0700 {MOUNT}/releases/{n}.tmp && mv {MOUNT}/releases/{n}.tmp {MOUNT}/releases/{n}"
        ))
        .await?;
        Ok(())
    }

    /// The release `current` points at, if any.
    pub async fn current(&self) -> anyhow::Result<Option<u32>> {
        let out = self
            .sh(&format!("readlink {MOUNT}/current || true"))
            .await?;
        Ok(out.trim().rsplit('/').next().and_then(|n| n.parse().ok()))
    }

    /// Point `current` at release `n` (an atomic rename of a new symlink).
    pub async fn set_current(&self, n: u32) -> anyhow::Result<()> {
        self.sh(&format!(
            "cd {MOUNT} && ln -sfn releases/{n} current.tmp && mv -Tf current.tmp current"
        ))
        .await?;
        Ok(())
    }

    /// Remove release directories other than `keep`.
    pub async fn remove_releases_except(&self, keep: &[u32]) -> anyhow::Result<()> {
        let keep: Vec<String> = keep.iter().map(|n| n.to_string()).collect();
        self.sh(&format!(
            "cd {MOUNT}/releases 2>/dev/null || exit 0; for d in *; do case \" {} \" in *\" $d \"*) ;; *) rm -rf \"$d\";; esac; done",
            keep.join(" ")
        ))
        .await?;
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.engine.remove(&self.id).await;
    }
}

/// In nginx's container: note its workers, test and reload the configuration, then
/// wait (up to 30 s) until those workers are gone. `nginx -s reload` only signals the
/// master; the old workers go on serving what they accepted with the old
/// configuration, so the release they send to must not stop before they are done.
const RELOAD_AND_DRAIN: &str = r#"old=$(for p in /proc/[0-9]*; do case "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" in "nginx: worker process"*) echo "${p#/proc/}";; esac; done)
nginx -t -q && nginx -s reload || exit 1
i=0
while [ "$i" -lt 300 ]; do
  alive=
  for p in $old; do [ -d "/proc/$p" ] && alive=1; done
  [ -z "$alive" ] && exit 0
  sleep 0.1; i=$((i + 1))
done"#;

/// Write nginx's live include and reload it gracefully: old workers finish their
/// requests, and this returns once they have ([`RELOAD_AND_DRAIN`]). A config nginx
/// refuses is never loaded: `nginx -t` first.
pub async fn write_live(engine: &Engine, nginx: &str, conf: &str) -> anyhow::Result<()> {
    engine
        .put_files(
            nginx,
            LIVE_DIR,
            &[FileEntry {
                path: "live.conf".into(),
                bytes: conf.as_bytes().to_vec(),
                mode: 0o644,
            }],
        )
        .await
        .context("writing nginx's live-release include (is the `nginx-live` volume mounted at /etc/nginx/countable?)")?;
    let out = engine
        .exec_capture(nginx, &["sh", "-c", RELOAD_AND_DRAIN], &[])
        .await?;
    if out.code != 0 {
        anyhow::bail!("nginx refused the new configuration: {}", out.stderr.trim());
    }
    Ok(())
}

/// nginx's include: which release serves, and (before a switch) the candidate that
/// requests carrying the deploy's preview token reach.
pub fn live_conf(s: &Settings, live: Option<u32>, preview: Option<(u32, &str)>) -> String {
    let mut out = String::from("# Written by countable deploy: the release that serves.\n");
    if let Some(n) = live {
        out.push_str(&format!("set $app http://{}:{};\n", s.alias(n), s.web_port));
    }
    if let Some((n, token)) = preview {
        out.push_str(&format!(
            "if ($http_x_countable_preview = \"{token}\") {{\n    set $app http://{}:{};\n}}\n",
            s.alias(n),
            s.web_port
        ));
    }
    out
}

/// The containers of service `service` in the environment's project, with their
/// release label: (id, name, release, running).
pub async fn release_containers(
    engine: &Engine,
    s: &Settings,
    service: &str,
) -> anyhow::Result<Vec<(String, String, Option<u32>, bool)>> {
    let mut out = Vec::new();
    for c in engine.project_services(&s.compose_project).await? {
        if c.service != service {
            continue;
        }
        let labels = engine.container_labels(&c.id).await?;
        let release = labels.get(LABEL_RELEASE).and_then(|r| r.parse().ok());
        out.push((c.id, c.container, release, c.state == "running"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_include() {
        let p = crate::project::Project {
            root: "/srv/shop".into(),
            config: crate::project::Config::parse(
                "project: shop\nenvironments:\n  prod: {}\n",
                std::path::Path::new("countable.yml"),
            )
            .unwrap(),
        };
        let s = Settings::resolve(&p, &crate::names::EnvName::parse("prod").unwrap()).unwrap();
        let c = live_conf(&s, Some(3), Some((4, "tok")));
        assert!(c.contains("set $app http://web-r3:8000;"), "{c}");
        assert!(
            c.contains("if ($http_x_countable_preview = \"tok\")"),
            "{c}"
        );
        assert!(c.contains("set $app http://web-r4:8000;"), "{c}");
        assert!(!live_conf(&s, None, None).contains("set"));
        // An adopted web listening elsewhere (countable.yml's services.web_port).
        let s = Settings {
            web_port: 8080,
            ..s
        };
        assert!(live_conf(&s, Some(3), None).contains("set $app http://web-r3:8080;"));
    }
}
