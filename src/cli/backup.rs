//! `countable backup [<env>]`: dump an environment's database into its store, proven,
//! with its media beside it.

use crate::backup::{self, Compress};
use crate::data;
use crate::environment::Local;
use crate::ui::Printer;

/// Back up an environment's whole database (pg_dump custom format, inside its db
/// container) into its `backups:` store under `<UTC time>.backup`, check the stored
/// object's size and SHA-256, and write a manifest beside it; then its media (the
/// `media` volume, or its `media:` bucket), incrementally, under the same time:
/// `<UTC time>.media.json` and `<UTC time>.media/`
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable backup prod\n  countable backup prod --compress lrzip   for teams that keep .lrz backups\n\nCron on the production server:\n  15 2 * * *  cd /srv/shop && countable backup prod --quiet"
)]
pub struct Args {
    /// The environment (default: `data_from`)
    pub env: Option<String>,
    /// Compression over pg_dump's custom format (which is compressed already)
    #[arg(long, value_enum, default_value_t = Compress::None)]
    pub compress: Compress,
    /// Print the manifest as JSON on stdout (with a `media` summary)
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let local = Local::open(&std::env::current_dir()?)?;
    let env = data::resolve_env(&local, args.env.as_deref())?;
    let store = data::store_of(&local, &env).await?;
    let (_, db) = local.env_db(&env).await?;
    let media = local.env_media(&env, &db).await?;
    let backed = backup::backup(&db, env.as_str(), &store, args.compress, &media, printer).await?;
    if args.json {
        printer.data(&serde_json::to_string_pretty(&backed)?);
    } else {
        printer.data(&backed.manifest.key);
    }
    Ok(())
}
