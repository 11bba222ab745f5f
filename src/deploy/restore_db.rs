//! An environment's database back to one of its backups (`rollback --restore-db`,
//! `undo-sync`), through the pull-db engine (restored beside, verified, swapped in one
//! transaction, the replaced database kept as the previous one), with the
//! environment's app services stopped only around the swap. Durable settings
//! throughout: this is a deployed environment, not a throwaway local database.

use crate::restore::{self, Options, Source, Target};
use crate::store::Store;
use crate::ui::Printer;

/// Restore `key` from `store` into `target` (whose `app_services` are stopped for the
/// swap and started again, and whose `keep_stopped` stay stopped).
pub async fn restore(
    target: &Target,
    store: &Store,
    key: &str,
    template: Option<String>,
    printer: &Printer,
) -> anyhow::Result<restore::Summary> {
    let db = &target.db;
    let backup = store.pick(Some(key)).await?;
    if let Some(t) = backup.taken_at() {
        let lost = time::OffsetDateTime::now_utc() - t;
        printer.warn(&format!(
            "restoring {key}: writes of the last {} min to {} are lost (the replaced database is kept beside it as {})",
            lost.whole_minutes(),
            db.name,
            restore::previous_name(&db.name)
        ));
    }
    let opened = store.open(&backup).await?;
    let source = Source {
        label: format!("{}{}", store.location(), backup.key),
        reader: opened.reader,
        size: opened.size.or(Some(backup.size)),
    };
    let opts = Options {
        keep_previous: true,
        jobs: 1,
        fast: false,
        template,
    };
    restore::restore(target, source, &opts, printer).await
}
