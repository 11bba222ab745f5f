//! `rollback --restore-db`: an environment's database back to a pre-deploy backup,
//! through the pull-db engine (restored beside, verified, swapped in one transaction,
//! the replaced database kept as the previous one), with the environment's app
//! services stopped only around the swap. Durable settings throughout: this is
//! production, not a throwaway local database.

use crate::compose::Compose;
use crate::restore::{self, Db, Options, Source, Target};
use crate::store::Store;
use crate::ui::Printer;

/// Restore `key` from `store` into `db`; `compose` stops `replaced` for the swap and
/// leaves it stopped (the serving web release: started again, its entrypoint would
/// migrate the restored database forward). It is started again only if the swap fails.
pub async fn restore(
    db: &Db,
    store: &Store,
    key: &str,
    compose: Compose,
    replaced: Vec<String>,
    template: Option<String>,
    printer: &Printer,
) -> anyhow::Result<restore::Summary> {
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
    let target = Target {
        db: db.clone(),
        apps: restore::Apps::Compose(compose),
        app_services: Vec::new(),
        keep_stopped: replaced,
    };
    let opts = Options {
        keep_previous: true,
        jobs: 1,
        fast: false,
        template,
    };
    restore::restore(&target, source, &opts, printer).await
}
