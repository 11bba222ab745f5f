//! Old release images on the host: keep the newest `keep_releases` of this
//! environment (found by label, never by name), and never the one serving or the one
//! before it, whatever `keep_releases` says. Reports the bytes reclaimed.

use super::settings::{Settings, LABEL_ENV, LABEL_PROJECT, LABEL_RELEASE};
use crate::engine::{Engine, ImageInfo};

/// Which images go: those beyond the newest `keep`, sparing `protect`.
pub fn plan(images: &[ImageInfo], s: &Settings, keep: u32, protect: &[u32]) -> Vec<ImageInfo> {
    let mut ours: Vec<(u32, &ImageInfo)> = images
        .iter()
        .filter(|i| {
            i.labels.get(LABEL_PROJECT).map(String::as_str) == Some(s.project.as_str())
                && i.labels.get(LABEL_ENV).map(String::as_str) == Some(s.env.as_str())
        })
        .filter_map(|i| {
            i.labels
                .get(LABEL_RELEASE)
                .and_then(|r| r.parse().ok())
                .map(|r| (r, i))
        })
        .collect();
    ours.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
    ours.into_iter()
        .skip(keep as usize)
        .filter(|(r, _)| !protect.contains(r))
        .map(|(_, i)| i.clone())
        .collect()
}

/// Remove what `plan` picks; the bytes reclaimed and the releases removed.
pub async fn prune(
    engine: &Engine,
    s: &Settings,
    protect: &[u32],
) -> anyhow::Result<(u64, Vec<u32>)> {
    let images = engine.images_labelled(LABEL_PROJECT, &s.project).await?;
    let mut bytes = 0;
    let mut removed = Vec::new();
    for i in plan(&images, s, s.keep_releases, protect) {
        if engine.remove_image(&i.id).await.is_ok() {
            bytes += i.size;
            if let Some(r) = i.labels.get(LABEL_RELEASE).and_then(|r| r.parse().ok()) {
                removed.push(r);
            }
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
            tags: vec![],
            labels: HashMap::from([
                (LABEL_PROJECT.to_string(), "shop".to_string()),
                (LABEL_ENV.to_string(), env.to_string()),
                (LABEL_RELEASE.to_string(), r.to_string()),
            ]),
            size: 100,
        };
        let images: Vec<ImageInfo> = (1..=5)
            .map(|r| img(r, "prod"))
            .chain([img(1, "staging")])
            .collect();
        let gone: Vec<String> = plan(&images, &s, 2, &[2])
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(gone, ["sha256:prod3", "sha256:prod1"]);
    }
}
