//! The release ledger of an environment: one JSON document in the environment's
//! backup store (`releases.ledger.json`, beside the backups), so Jenkins, a laptop and
//! staging read one history. Written only under the deploy lock; every deploy and
//! rollback adds a record when it starts and completes it when it ends.
//!
//! It never decides anything: it records and answers "which release is which".

use serde::{Deserialize, Serialize};

use crate::store::Store;

pub const LEDGER_KEY: &str = "releases.ledger.json";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Deploy,
    Rollback,
    /// `countable sync` wrote this environment's database (and buckets): no release.
    Sync,
    /// `countable undo-sync` put them back.
    UndoSync,
}

/// How long one step took and how it ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub name: String,
    pub seconds: f64,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub release: u32,
    pub kind: Kind,
    pub outcome: Outcome,
    pub git_sha: String,
    pub git_ref: String,
    pub image: String,
    #[serde(default)]
    pub image_id: String,
    pub by: String,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The pre-deploy backup's key in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_key: Option<String>,
    /// `app.name` rows of django_migrations before and after.
    #[serde(default)]
    pub migrations_before: Vec<String>,
    #[serde(default)]
    pub migrations_after: Vec<String>,
    #[serde(default)]
    pub bytes_shipped: u64,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a rollback: the release whose image it brought back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<u32>,
    /// For a sync or its undo: what it did (the `--json` report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

impl Record {
    /// Release `release` of `kind`, starting now (outcome `running`).
    pub fn begin(
        release: u32,
        kind: Kind,
        git_sha: &str,
        git_ref: &str,
        image: &str,
        by: &str,
    ) -> Self {
        Record {
            release,
            kind,
            outcome: Outcome::Running,
            git_sha: git_sha.into(),
            git_ref: git_ref.into(),
            image: image.into(),
            image_id: String::new(),
            by: by.into(),
            started_at: super::run::now(),
            finished_at: None,
            backup_key: None,
            migrations_before: vec![],
            migrations_after: vec![],
            bytes_shipped: 0,
            steps: vec![],
            error: None,
            rollback_to: None,
            report: None,
        }
    }

    /// Is this a release of code (a deploy or a rollback), not a sync?
    pub fn is_release(&self) -> bool {
        matches!(self.kind, Kind::Deploy | Kind::Rollback)
    }

    /// Migrations this release applied (after − before).
    pub fn applied(&self) -> Vec<String> {
        self.migrations_after
            .iter()
            .filter(|m| !self.migrations_before.contains(m))
            .cloned()
            .collect()
    }
}

impl Record {
    /// Migrations this release reversed (before − after).
    pub fn reversed(&self) -> Vec<String> {
        self.migrations_before
            .iter()
            .filter(|m| !self.migrations_after.contains(m))
            .cloned()
            .collect()
    }
}

/// Every record, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Ledger {
    pub records: Vec<Record>,
}

impl Ledger {
    pub async fn load(store: &Store) -> anyhow::Result<Self> {
        match store.get_small(LEDGER_KEY).await? {
            None => Ok(Self::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{}{LEDGER_KEY} is not a release ledger countable can read: {e}",
                    store.location()
                )
            }),
        }
    }

    pub async fn save(&self, store: &Store) -> anyhow::Result<()> {
        store
            .put_small(LEDGER_KEY, serde_json::to_vec_pretty(self)?)
            .await?;
        Ok(())
    }

    /// The number the next release gets.
    pub fn next_number(&self) -> u32 {
        self.records.iter().map(|r| r.release).max().unwrap_or(0) + 1
    }

    /// Add or replace the record of `r.release`.
    pub fn put(&mut self, r: Record) {
        match self.records.iter_mut().find(|x| x.release == r.release) {
            Some(x) => *x = r,
            None => self.records.push(r),
        }
    }

    pub fn get(&self, release: u32) -> Option<&Record> {
        self.records.iter().find(|r| r.release == release)
    }

    /// The release serving now: the newest that succeeded (syncs are no releases).
    pub fn live(&self) -> Option<&Record> {
        self.records
            .iter()
            .rev()
            .find(|r| r.outcome == Outcome::Succeeded && r.is_release())
    }

    /// Newest first.
    pub fn newest_first(&self) -> Vec<&Record> {
        let mut v: Vec<&Record> = self.records.iter().collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.release));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u32, outcome: Outcome) -> Record {
        Record {
            release: n,
            kind: Kind::Deploy,
            outcome,
            git_sha: "abc".into(),
            git_ref: "master".into(),
            image: format!("shop-web:prod-{n}-abc"),
            image_id: String::new(),
            by: "jenkins".into(),
            started_at: "2026-12-01T00:00:00Z".into(),
            finished_at: None,
            backup_key: None,
            migrations_before: vec!["shop.0001_initial".into()],
            migrations_after: vec!["shop.0001_initial".into(), "shop.0002_x".into()],
            bytes_shipped: 0,
            steps: vec![],
            error: None,
            rollback_to: None,
            report: None,
        }
    }

    #[test]
    fn numbers_live_and_applied() {
        let mut l = Ledger::default();
        assert_eq!(l.next_number(), 1);
        l.put(rec(1, Outcome::Succeeded));
        l.put(rec(2, Outcome::Failed));
        assert_eq!(l.next_number(), 3);
        assert_eq!(l.live().unwrap().release, 1);
        l.put(rec(2, Outcome::Succeeded));
        assert_eq!(l.records.len(), 2);
        assert_eq!(l.live().unwrap().release, 2);
        assert_eq!(l.get(2).unwrap().applied(), ["shop.0002_x"]);
        assert_eq!(l.newest_first()[0].release, 2);
        // A sync is recorded but serves nothing.
        let mut sync = rec(3, Outcome::Succeeded);
        sync.kind = Kind::Sync;
        l.put(sync);
        assert_eq!(l.live().unwrap().release, 2);
        assert_eq!(l.next_number(), 4);
        let text = serde_json::to_string(&l).unwrap();
        assert_eq!(serde_json::from_str::<Ledger>(&text).unwrap(), l);
    }
}
