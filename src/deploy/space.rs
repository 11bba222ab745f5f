//! Preflight for disk. Before anything is sent or taken: the host's Docker disk must
//! have more than a reserve free, and a directory store room for the backup (the size
//! of the newest one, with growth, else the database's size). Then, while the image
//! streams, its new layers may use only what is free beyond the reserve: the ship stops
//! before it would cross that line (the layers' sizes are known only as they stream).
//! Reads only; a refusal says what is short, by how much, and how to make room.
//!
//! It never removes anything to make room: that is `prune`'s job, after a success.

use crate::error::Hinted;
use crate::ui::human_bytes;

/// Left free on the host's Docker disk after the image is loaded: a database, its WAL
/// and the containers' logs keep writing there.
pub const HOST_RESERVE: u64 = 256 << 20;

/// What the check weighed, for the report and the refusal.
#[derive(Debug, Clone, PartialEq)]
pub struct Room {
    /// The host's Docker data root and its free bytes (`None`: `df` gave nothing).
    pub host_root: String,
    pub host_free: Option<u64>,
    /// The backup store's location, its free bytes and the backup's estimated size
    /// (`None` free: S3, nothing to check).
    pub store: String,
    pub store_free: Option<u64>,
    pub backup_estimate: u64,
}

/// The estimated size of the next backup: the newest one's size and a quarter more for
/// growth, else the database's own size (a generous bound: dumps leave indexes out).
pub fn backup_estimate(newest_backup: Option<u64>, database_bytes: Option<u64>) -> u64 {
    match newest_backup {
        Some(b) if b > 0 => b.saturating_add(b / 4),
        _ => database_bytes.unwrap_or(0),
    }
}

/// What the image's layers may use on the host: its free space beyond the reserve.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub root: String,
    pub free: u64,
    pub spare: u64,
}

impl Budget {
    /// None when the host's free space is unknown.
    pub fn of(r: &Room) -> Option<Budget> {
        r.host_free.map(|free| Budget {
            root: r.host_root.clone(),
            free,
            spare: free.saturating_sub(HOST_RESERVE),
        })
    }
}

fn refusal(env: &str, short: &[String]) -> Hinted {
    Hinted::new(
        format!(
            "not enough disk to deploy {env}, so nothing was changed: {}",
            short.join("; ")
        ),
        format!(
            "make room, then deploy again: on the host, `docker image prune` or a lower `keep_releases` for {env}; for the store, `countable backups {env} prune --apply`; or grow the disk"
        ),
    )
}

fn host_short(root: &str, free: u64, needs: &str) -> String {
    format!(
        "the host's Docker disk ({root}) has {} free; the release's image needs {needs} there, and {} must stay free",
        human_bytes(free),
        human_bytes(HOST_RESERVE)
    )
}

/// The refusal when the image's layers, as they streamed, outgrew the budget: `needed`
/// bytes were wanted and the stream was stopped (the load does not complete).
pub fn image_refused(env: &str, b: &Budget, needed: u64) -> Hinted {
    refusal(
        env,
        &[host_short(
            &b.root,
            b.free,
            &format!("more than {}", human_bytes(needed.max(b.spare))),
        )],
    )
}

/// Whether there is room before anything is sent or taken; the refusal names each
/// shortfall and the fix.
pub fn check(env: &str, r: &Room) -> Result<(), Hinted> {
    let mut short = Vec::new();
    if let Some(free) = r.host_free {
        if free <= HOST_RESERVE {
            short.push(host_short(&r.host_root, free, "some room"));
        }
    }
    if let Some(free) = r.store_free {
        if free < r.backup_estimate {
            short.push(format!(
                "the backup store ({}) has {} free; the pre-deploy backup needs about {}",
                r.store,
                human_bytes(free),
                human_bytes(r.backup_estimate)
            ));
        }
    }
    if short.is_empty() {
        Ok(())
    } else {
        Err(refusal(env, &short))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> Room {
        Room {
            host_root: "/var/lib/docker".into(),
            host_free: Some(10 << 30),
            store: "backups/prod/".into(),
            store_free: Some(10 << 30),
            backup_estimate: 1 << 30,
        }
    }

    #[test]
    fn room_enough_passes_and_the_budget_keeps_the_reserve() {
        assert!(check("prod", &room()).is_ok());
        let b = Budget::of(&room()).unwrap();
        assert_eq!(b.spare, (10 << 30) - HOST_RESERVE);
    }

    #[test]
    fn a_host_at_its_reserve_refuses_before_anything_is_sent() {
        let mut r = room();
        r.host_free = Some(HOST_RESERVE);
        let e = check("prod", &r).unwrap_err();
        assert!(
            e.message
                .contains("the host's Docker disk (/var/lib/docker) has 256.0 MiB free"),
            "{}",
            e.message
        );
        assert!(e.message.contains("nothing was changed"), "{}", e.message);
        assert!(e.hint.contains("docker image prune"), "{}", e.hint);
        r.host_free = Some(HOST_RESERVE + 1);
        assert!(check("prod", &r).is_ok());
    }

    #[test]
    fn layers_over_the_budget_are_refused_with_the_figures() {
        let mut r = room();
        r.host_free = Some(HOST_RESERVE + (100 << 20));
        let b = Budget::of(&r).unwrap();
        let e = image_refused("prod", &b, 150 << 20);
        assert!(e.message.contains("has 356.0 MiB free; the release's image needs more than 150.0 MiB there, and 256.0 MiB must stay free"), "{}", e.message);
    }

    #[test]
    fn a_full_store_refuses_and_s3_is_not_checked() {
        let mut r = room();
        r.store_free = Some(100);
        let e = check("prod", &r).unwrap_err();
        assert!(
            e.message
                .contains("the backup store (backups/prod/) has 100 B free"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("Docker disk"), "{}", e.message);
        r.store_free = None;
        assert!(check("prod", &r).is_ok());
    }

    #[test]
    fn unknown_host_free_space_is_not_a_refusal() {
        let mut r = room();
        r.host_free = None;
        assert!(check("prod", &r).is_ok());
        assert_eq!(Budget::of(&r), None);
    }

    #[test]
    fn the_estimate_grows_the_newest_backup_else_takes_the_database() {
        assert_eq!(backup_estimate(Some(400), Some(10_000)), 500);
        assert_eq!(backup_estimate(None, Some(10_000)), 10_000);
        assert_eq!(backup_estimate(Some(0), None), 0);
    }
}
