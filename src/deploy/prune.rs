//! Old release images on the host: keep the newest `keep_releases` images of this
//! environment's succeeded releases (found by label, never by name), and never the
//! image serving or the one before it, whatever `keep_releases` says. An image of a
//! release that never served (failed) goes: nothing can roll back to it. Reports the
//! bytes reclaimed.

use super::settings::{Settings, LABEL_ENV, LABEL_PROJECT, LABEL_RELEASE};
use crate::engine::{Engine, ImageInfo};

/// The releases an image serves, from its tags (`…<project>-<web>:<env>-<n>-<sha>`),
/// else from its release label (images built before the label moved to containers).
fn releases_of(i: &ImageInfo, s: &Settings) -> Vec<u32> {
    let prefix = format!("{}-{}:{}-", s.project, s.web, s.env);
    let mut out: Vec<u32> = i
        .tags
        .iter()
        .filter_map(|t| {
            let at = t.rfind(&prefix)?;
            t[at + prefix.len()..].split('-').next()?.parse().ok()
        })
        .collect();
    if out.is_empty() {
        out.extend(
            i.labels
                .get(LABEL_RELEASE)
                .and_then(|r| r.parse::<u32>().ok()),
        );
    }
    out
}

/// What a prune must leave.
#[derive(Debug, Clone, Default)]
pub struct Keep {
    /// Image names (tags) in use: the serving one, the one before it.
    pub images: Vec<String>,
    /// Releases that succeeded (rollback targets).
    pub succeeded: Vec<u32>,
}

/// Which images go: every image of a release that did not succeed, and succeeded ones
/// beyond the newest `keep` (the protected ones count); never one `protect` names.
pub fn plan(images: &[ImageInfo], s: &Settings, keep: u32, protect: &Keep) -> Vec<ImageInfo> {
    let mut ours: Vec<(u32, &ImageInfo)> = images
        .iter()
        .filter(|i| {
            i.labels.get(LABEL_PROJECT).map(String::as_str) == Some(s.project.as_str())
                && i.labels.get(LABEL_ENV).map(String::as_str) == Some(s.env.as_str())
        })
        .filter_map(|i| {
            let rs = releases_of(i, s);
            rs.iter().max().map(|r| (*r, i))
        })
        .collect();
    ours.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
    let mut kept = 0;
    let mut gone = Vec::new();
    for (_, i) in ours {
        if i.tags.iter().any(|t| protect.images.contains(t)) {
            // Serving or previous: kept whatever the count, and counted.
            kept += 1;
            continue;
        }
        if releases_of(i, s)
            .iter()
            .any(|x| protect.succeeded.contains(x))
            && kept < keep
        {
            kept += 1;
            continue;
        }
        gone.push(i.clone());
    }
    gone
}

/// Remove what `plan` picks; the bytes reclaimed and the releases removed.
pub async fn prune(
    engine: &Engine,
    s: &Settings,
    protect: &Keep,
) -> anyhow::Result<(u64, Vec<u32>)> {
    let images = engine.images_labelled(LABEL_PROJECT, &s.project).await?;
    let mut bytes = 0;
    let mut removed = Vec::new();
    for i in plan(&images, s, s.keep_releases, protect) {
        if engine.remove_image(&i.id).await.is_ok() {
            bytes += i.size;
            removed.extend(releases_of(&i, s));
        }
    }
    Ok((bytes, removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keeps_the_newest_and_the_protected() {
        let p = crate::project::Project {
            root: "/srv/shop".into(),
            config: crate::project::Config::parse(
                "project: shop\nenvironments:\n  prod: {keep_releases: 2}\n  staging: {}\n",
                std::path::Path::new("countable.yml"),
            )
            .unwrap(),
        };
        let s = Settings::resolve(&p, &crate::names::EnvName::parse("prod").unwrap()).unwrap();
        let img = |r: u32, env: &str| ImageInfo {
            id: format!("sha256:{env}{r}"),
            tags: vec![format!("shop-web:{env}-{r}-abc")],
            labels: HashMap::from([
                (LABEL_PROJECT.to_string(), "shop".to_string()),
                (LABEL_ENV.to_string(), env.to_string()),
                (LABEL_RELEASE.to_string(), r.to_string()),
            ]),
            size: 100,
        };
        let images: Vec<ImageInfo> = (1..=6)
            .map(|r| img(r, "prod"))
            .chain([img(1, "staging")])
            .collect();
        // 6 serves, 1 is the one before it (a rollback brought it back), 5 failed.
        let keep = Keep {
            images: vec!["shop-web:prod-6-abc".into(), "shop-web:prod-1-abc".into()],
            succeeded: vec![1, 2, 3, 4, 6],
        };
        let gone: Vec<String> = plan(&images, &s, 2, &keep)
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(gone, ["sha256:prod5", "sha256:prod3", "sha256:prod2"]);
    }
}
