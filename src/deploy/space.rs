//! Preflight for disk: before the backup is taken and before a byte is sent, the host
//! must have room for the release's image (the unpacked layers it lacks, from the ship
//! plan) with a reserve left over, and a directory store room for the backup (the size
//! of the newest one, with growth, else the database's size). Reads only; a refusal
//! says what is short, by how much, and how to make room.
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
    /// Bytes the release's image adds on the host.
    pub image_needs: u64,
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

/// Whether there is room; the refusal names each shortfall and the fix.
pub fn check(env: &str, r: &Room) -> Result<(), Hinted> {
    let mut short = Vec::new();
    if let Some(free) = r.host_free {
        let need = r.image_needs.saturating_add(HOST_RESERVE);
        if free < need {
            short.push(format!(
                "the host's Docker disk ({}) has {} free; the release's image needs {} there, and {} must stay free",
                r.host_root,
                human_bytes(free),
                human_bytes(r.image_needs),
                human_bytes(HOST_RESERVE)
            ));
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
        return Ok(());
    }
    Err(Hinted::new(
        format!(
            "not enough disk to deploy {env}, so nothing was changed: {}",
            short.join("; ")
        ),
        format!(
            "make room, then deploy again: on the host, `docker image prune` or a lower `keep_releases` for {env}; for the store, `countable backups {env} prune --apply`; or grow the disk"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> Room {
        Room {
            host_root: "/var/lib/docker".into(),
            host_free: Some(10 << 30),
            image_needs: 500 << 20,
            store: "backups/prod/".into(),
            store_free: Some(10 << 30),
            backup_estimate: 1 << 30,
        }
    }

    #[test]
    fn room_enough_passes() {
        assert!(check("prod", &room()).is_ok());
    }

    #[test]
    fn the_host_keeps_a_reserve_beyond_the_image() {
        let mut r = room();
        r.host_free = Some((500 << 20) + HOST_RESERVE - 1);
        let e = check("prod", &r).unwrap_err();
        assert!(e.message.contains("the host's Docker disk (/var/lib/docker) has"), "{}", e.message);
        assert!(e.message.contains("nothing was changed"), "{}", e.message);
        assert!(e.hint.contains("docker image prune"), "{}", e.hint);
        r.host_free = Some((500 << 20) + HOST_RESERVE);
        assert!(check("prod", &r).is_ok());
    }

    #[test]
    fn a_full_store_refuses_and_s3_is_not_checked() {
        let mut r = room();
        r.store_free = Some(100);
        let e = check("prod", &r).unwrap_err();
        assert!(e.message.contains("the backup store (backups/prod/) has 100 B free"), "{}", e.message);
        assert!(!e.message.contains("Docker disk"), "{}", e.message);
        r.store_free = None;
        assert!(check("prod", &r).is_ok());
    }

    #[test]
    fn unknown_host_free_space_is_not_a_refusal() {
        let mut r = room();
        r.host_free = None;
        r.image_needs = u64::MAX;
        assert!(check("prod", &r).is_ok());
    }

    #[test]
    fn the_estimate_grows_the_newest_backup_else_takes_the_database() {
        assert_eq!(backup_estimate(Some(400), Some(10_000)), 500);
        assert_eq!(backup_estimate(None, Some(10_000)), 10_000);
        assert_eq!(backup_estimate(Some(0), None), 0);
    }
}
