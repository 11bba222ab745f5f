//! `countable rollback <env> [RELEASE]`: bring back an earlier release's image, aware
//! of the schema. The migrations recorded in django_migrations that the serving code
//! knows and the target release's code does not (each image's own
//! `showmigrations --plan`) decide the path:
//! - none: code only, through the same health gate and switch as a deploy;
//! - all reversible (`migrate <app> <name> --plan` shows no IRREVERSIBLE step):
//!   reversed with the serving image first, after a backup, then the switch;
//! - some irreversible: refused, with the list, unless `--restore-db`, which restores
//!   the backup taken before the first release after the target.
//!
//! A rollback is a new release in the ledger (Heroku's rule), pointing at the one
//! whose image it brought back.

use std::time::Duration;

use anyhow::Context;

use super::ledger::{Kind, Ledger, Outcome, Record};
use super::model::{self, Flavor};
use super::run::{self, Plan};
use super::settings::Settings;
use super::Steps;
use crate::compose::Compose;
use crate::engine::Engine;
use crate::error::{Hint, Hinted};
use crate::names::EnvName;
use crate::project::Project;
use crate::restore::Db;
use crate::store::Store;
use crate::ui::Printer;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The release to go back to (default: the succeeded one before the live one).
    pub target: Option<u32>,
    /// Restore the pre-deploy backup when migrations cannot be reversed.
    pub restore_db: bool,
    pub dry_run: bool,
    pub lock_wait: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("{env} has no live release to roll back from")]
    NothingLive { env: String },
    #[error("{env} has no succeeded release before release {live} to go back to")]
    NoTarget { env: String, live: u32 },
    #[error(
        "release {0} did not succeed (or does not exist): only a release that served can come back"
    )]
    NotServable(u32),
    #[error("release {release} is the one serving")]
    IsLive { release: u32 },
    #[error("the image of release {release} ({image}) is no longer on the host")]
    ImageGone {
        release: u32,
        image: String,
        sha: String,
        env: String,
    },
    #[error("release {target} does not know {} applied migration(s) that cannot be reversed: {}", .irreversible.len(), .irreversible.join(", "))]
    Irreversible {
        env: String,
        target: u32,
        irreversible: Vec<String>,
        backup: Option<String>,
    },
}

impl Hint for RollbackError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            RollbackError::NothingLive { env } => format!("deploy first: `countable deploy {env}`"),
            RollbackError::NoTarget { env, .. } => format!("pick a release that succeeded from `countable releases {env}`: `countable rollback {env} <RELEASE>`"),
            RollbackError::NotServable(_) | RollbackError::IsLive { .. } => "pick a release that succeeded from `countable releases <env>`: `countable rollback <env> <RELEASE>`".into(),
            RollbackError::ImageGone { sha, env, .. } => format!(
                "deploy that commit again instead: `countable deploy {env} --ref {sha}` (raise keep_releases to keep more images)"
            ),
            RollbackError::Irreversible { env, target, backup, .. } => match backup {
                Some(b) => format!("`countable rollback {env} {target} --restore-db` restores {b}, the backup taken before those migrations (writes since then are lost); or deploy a fix forward"),
                None => "deploy a fix forward: no pre-deploy backup is recorded for those migrations".into(),
            },
        })
    }
}
crate::register_hint!(RollbackError);

/// `app.name` of each migration in an image's `showmigrations --plan` output.
pub fn parse_plan(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("[X]").or_else(|| l.strip_prefix("[ ]"))?;
            let name = rest.split_whitespace().next()?;
            name.contains('.').then(|| name.to_string())
        })
        .collect()
}

/// The migrations whose undo `migrate … --plan` marks IRREVERSIBLE: the migration
/// headers (unindented `app.name` lines) under which such an operation is listed.
pub fn irreversible_in(plan_output: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in plan_output.lines() {
        if !line.starts_with(' ') && line.trim().contains('.') && !line.contains(' ') {
            current = Some(line.trim().to_string());
        } else if line.contains("IRREVERSIBLE") {
            if let Some(m) = &current {
                if !out.contains(m) {
                    out.push(m.clone());
                }
            }
        }
    }
    out
}

/// The migrations to undo: applied, known to the serving code, unknown to the
/// target's; in the order they were applied.
pub fn orphans(applied: &[String], current: &[String], target: &[String]) -> Vec<String> {
    applied
        .iter()
        .filter(|m| current.contains(m) && !target.contains(m))
        .cloned()
        .collect()
}

/// Per app with orphans, the migration to go back to: the target's last one of that
/// app, or `zero`. Apps in the reverse order of their first orphan.
pub fn destinations(orphans: &[String], target: &[String]) -> Vec<(String, String)> {
    let mut apps: Vec<String> = Vec::new();
    for m in orphans {
        let app = m.split('.').next().unwrap_or_default().to_string();
        if !apps.contains(&app) {
            apps.push(app);
        }
    }
    apps.reverse();
    apps.into_iter()
        .map(|app| {
            let to = target
                .iter()
                .rev()
                .find(|m| m.split('.').next() == Some(app.as_str()))
                .and_then(|m| m.split_once('.').map(|(_, n)| n.to_string()))
                .unwrap_or_else(|| "zero".into());
            (app, to)
        })
        .collect()
}

/// Pick the release to go back to.
pub fn pick<'a>(
    ledger: &'a Ledger,
    env: &str,
    wanted: Option<u32>,
) -> Result<(&'a Record, &'a Record), RollbackError> {
    let live = ledger
        .live()
        .ok_or_else(|| RollbackError::NothingLive { env: env.into() })?;
    let target = match wanted {
        Some(n) => {
            let r = ledger
                .get(n)
                .filter(|r| r.outcome == Outcome::Succeeded && r.is_release())
                .ok_or(RollbackError::NotServable(n))?;
            if r.release == live.release {
                return Err(RollbackError::IsLive { release: n });
            }
            r
        }
        None => ledger
            .newest_first()
            .into_iter()
            .find(|r| {
                r.is_release()
                    && r.release < live.release
                    && r.outcome == Outcome::Succeeded
                    && r.image != live.image
            })
            .ok_or(RollbackError::NoTarget {
                env: env.into(),
                live: live.release,
            })?,
    };
    Ok((live, target))
}

/// A one-off `python manage.py ARGS` in a container of `image` (no migrate, no
/// collectstatic at its start): its stdout.
/// `extra`: one more override file's YAML (a Swarm's: the stack's network).
pub(crate) async fn manage(
    plan: &Plan,
    scratch: &std::path::Path,
    base: &[String],
    image: &str,
    args: &[&str],
    extra: Option<&str>,
) -> anyhow::Result<String> {
    let keys = run::keys(plan);
    let none = Default::default();
    let release = model::Release {
        settings: &plan.settings,
        number: 0,
        sha: &plan.sha,
        image,
        secret_keys: &keys,
        bind_hashes: &none,
    };
    let file = scratch.join(format!(
        "oneoff-{}.yaml",
        crate::envfile::random_password(8)
    ));
    std::fs::write(&file, model::render(&release, &plan.shape, Flavor::Run))?;
    let mut files = [base.to_vec(), vec![file.display().to_string()]].concat();
    if let Some(extra) = extra {
        let more = file.with_extension("extra.yaml");
        std::fs::write(&more, extra)?;
        files.push(more.display().to_string());
    }
    let compose: Compose = run::remote_compose(plan, files, scratch)?;
    let s = &plan.settings;
    let mut argv = vec![
        "run",
        "--rm",
        "--no-deps",
        "-T",
        "-e",
        "DJANGO_MIGRATE=0",
        "-e",
        "DJANGO_COLLECTSTATIC=0",
        &s.web,
        "python",
        "manage.py",
    ];
    argv.extend(args);
    run::capture(&compose, &argv).await
}

pub async fn rollback(
    project: &Project,
    env: &EnvName,
    opts: &Options,
    printer: &Printer,
) -> anyhow::Result<Option<Record>> {
    if project
        .config
        .environments
        .get(env)
        .is_some_and(|e| e.is_swarm())
    {
        return crate::swarm::rollback::rollback(project, env, opts, printer).await;
    }
    let settings = Settings::resolve(project, env)?;
    let s = &settings;
    let inputs = Plan::rollback_inputs(project, env, s)?;
    let host = Engine::connect_to(s.docker_host.as_deref()).await?;
    let store = Store::for_environment(
        env.as_str(),
        &project.config.environments[env],
        &project.root,
    )
    .await?;
    let db_container = host
        .service_container(&s.compose_project, &s.db)
        .await
        .map_err(|e| {
            Hinted::wrap(
                e.into(),
                format!("{env} has no running database to roll back"),
                format!("deploy first: `countable deploy {env}`"),
            )
        })?;
    let db = Db::discover(host.clone(), db_container).await?;
    let ledger = Ledger::load(&store).await?;
    let (live, target) = pick(&ledger, env.as_str(), opts.target)?;
    let (live, target) = (live.clone(), target.clone());
    let image_id = match host.image_info(&target.image).await? {
        Some(i) => i.id,
        None => {
            return Err(RollbackError::ImageGone {
                release: target.release,
                image: target.image.clone(),
                sha: target.git_sha.clone(),
                env: env.to_string(),
            }
            .into())
        }
    };
    let scratch = tempfile::Builder::new()
        .prefix("countable-rollback-")
        .tempdir()?;
    let plan = Plan::for_rollback(project, &settings, &target, inputs);
    let base = plan.base_files();

    printer.status(&format!(
        "reading the migrations of release {} and of release {} (serving)",
        target.release, live.release
    ));
    let target_plan = parse_plan(
        &manage(
            &plan,
            scratch.path(),
            &base,
            &target.image,
            &["showmigrations", "--plan"],
            None,
        )
        .await?,
    );
    let current_plan = parse_plan(
        &manage(
            &plan,
            scratch.path(),
            &base,
            &live.image,
            &["showmigrations", "--plan"],
            None,
        )
        .await?,
    );
    let applied = run::migrations(&db).await;
    let undo = orphans(&applied, &current_plan, &target_plan);
    let dests = destinations(&undo, &target_plan);
    let mut irreversible = Vec::new();
    for (app, to) in &dests {
        let out = manage(
            &plan,
            scratch.path(),
            &base,
            &live.image,
            &["migrate", app, to, "--plan"],
            None,
        )
        .await?;
        irreversible.extend(irreversible_in(&out));
    }
    // The backup taken before the first release after the target: the database as the
    // target's code last knew it.
    let restore_from = ledger
        .records
        .iter()
        .filter(|r| r.release > target.release && r.kind == Kind::Deploy)
        .find_map(|r| r.backup_key.clone());
    let path = if undo.is_empty() {
        "code only (no migration to undo)".to_string()
    } else if irreversible.is_empty() {
        format!(
            "reverse {} with release {}'s image, then switch",
            undo.join(", "),
            live.release
        )
    } else {
        format!("irreversible: {}", irreversible.join(", "))
    };
    if opts.dry_run {
        printer.data(&format!(
            "# rollback {env} from release {} to release {} ({})",
            live.release, target.release, target.image
        ));
        printer.data(&format!("# schema: {path}"));
        for (app, to) in dests.iter().filter(|_| irreversible.is_empty()) {
            printer.data(&format!(
                "docker compose -p {} run --rm --no-deps {} python manage.py migrate {app} {to}",
                s.compose_project, s.web
            ));
        }
        return Ok(None);
    }
    if !irreversible.is_empty() && !opts.restore_db {
        return Err(RollbackError::Irreversible {
            env: env.to_string(),
            target: target.release,
            irreversible,
            backup: restore_from,
        }
        .into());
    }
    printer.status(&format!(
        "rollback of {env} to release {}: {path}",
        target.release
    ));

    let who = format!("{env} rollback to {} by {}", target.release, plan.by);
    let (held, mut ledger, mut record) =
        run::open_release(&db, &store, env.as_str(), &who, opts.lock_wait, |n| {
            Record {
                image_id,
                rollback_to: Some(target.release),
                ..Record::begin(
                    n,
                    Kind::Rollback,
                    &target.git_sha,
                    &plan.git_ref,
                    &target.image,
                    &plan.by,
                )
            }
        })
        .await?;
    let mut steps = Steps::default();
    let outcome = async {
        steps.begin("backup");
        record.backup_key = Some(run::backup_first(&plan, &db, &store, printer).await?);
        if !undo.is_empty() {
            if irreversible.is_empty() {
                steps.begin("reverse migrations");
                for (app, to) in &dests {
                    printer.status(&format!(
                        "python manage.py migrate {app} {to} (with release {}'s code)",
                        live.release
                    ));
                    manage(
                        &plan,
                        scratch.path(),
                        &base,
                        &live.image,
                        &["migrate", app, to, "--noinput"],
                        None,
                    )
                    .await?;
                }
            } else {
                steps.begin("restore database");
                let key = restore_from
                    .clone()
                    .context("no pre-deploy backup is recorded after the target release")?;
                // The serving release's model stops and starts the app around the swap.
                let keys = run::keys(&plan);
                let none = Default::default();
                let serving = model::Release {
                    settings: s,
                    number: live.release,
                    sha: &live.git_sha,
                    image: &live.image,
                    secret_keys: &keys,
                    bind_hashes: &none,
                };
                let file = scratch.path().join("serving.yaml");
                std::fs::write(&file, model::render(&serving, &plan.shape, Flavor::Run))?;
                let compose = run::remote_compose(
                    &plan,
                    [base.clone(), vec![file.display().to_string()]].concat(),
                    scratch.path(),
                )?;
                // Only web stops, and stays stopped (compose's `start` of a service
                // that depends on web would start it too). Other services are
                // disconnected by the swap and reconnect to the restored database.
                let target = crate::restore::Target {
                    db: db.clone(),
                    apps: crate::restore::Apps::Compose(compose),
                    app_services: Vec::new(),
                    migrate_in: None,
                    keep_stopped: vec![s.web.clone()],
                };
                super::restore_db::restore(
                    &target,
                    &store,
                    &key,
                    project.config.db_template.clone(),
                    printer,
                )
                .await?;
            }
        }
        let protect = super::prune::Keep {
            images: vec![target.image.clone(), live.image.clone()],
            succeeded: ledger
                .records
                .iter()
                .filter(|r| r.outcome == Outcome::Succeeded)
                .map(|r| r.release)
                .collect(),
        };
        run::roll_out(
            &plan,
            &host,
            &base,
            scratch.path(),
            &mut record,
            &mut steps,
            printer,
            &protect,
        )
        .await
    }
    .await;
    run::close(
        &mut record,
        &mut steps,
        &db,
        outcome,
        &mut ledger,
        &store,
        held,
    )
    .await?;
    printer.success(&format!(
        "{env} serves release {}'s code again (recorded as release {})",
        target.release, record.release
    ));
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_orphans_and_destinations() {
        let out = "[X]  contenttypes.0001_initial\n[X]  shop.0001_initial\n[ ]  shop.0002_price\nSystem check identified no issues\n";
        assert_eq!(
            parse_plan(out),
            [
                "contenttypes.0001_initial",
                "shop.0001_initial",
                "shop.0002_price"
            ]
        );
        let applied: Vec<String> = [
            "shop.0001_initial",
            "shop.0002_price",
            "news.0001_initial",
            "gone.0001_x",
        ]
        .map(String::from)
        .to_vec();
        let current: Vec<String> = ["shop.0001_initial", "shop.0002_price", "news.0001_initial"]
            .map(String::from)
            .to_vec();
        let target: Vec<String> = ["shop.0001_initial"].map(String::from).to_vec();
        let o = orphans(&applied, &current, &target);
        assert_eq!(o, ["shop.0002_price", "news.0001_initial"]);
        assert_eq!(
            destinations(&o, &target),
            [
                ("news".to_string(), "zero".to_string()),
                ("shop".to_string(), "0001_initial".to_string())
            ]
        );
        assert!(orphans(&current, &current, &current).is_empty());
        let plan = "Planned operations:\ncatalog.0002_fill\n    Raw Python operation -> IRREVERSIBLE\ncatalog.0001_initial\n    Undo Create model Item\n";
        assert_eq!(irreversible_in(plan), ["catalog.0002_fill"]);
        assert!(irreversible_in(
            "Planned operations:\ncatalog.0001_initial\n    Undo Create model Item\n"
        )
        .is_empty());
    }

    #[test]
    fn picks_the_succeeded_release_before_the_live_one() {
        let rec = |n: u32, outcome, image: &str| Record {
            release: n,
            kind: Kind::Deploy,
            outcome,
            git_sha: "a".into(),
            git_ref: "m".into(),
            image: image.into(),
            image_id: String::new(),
            by: "x".into(),
            started_at: String::new(),
            finished_at: None,
            backup_key: None,
            migrations_before: vec![],
            migrations_after: vec![],
            bytes_shipped: 0,
            steps: vec![],
            error: None,
            rollback_to: None,
            report: None,
        };
        let mut l = Ledger::default();
        l.put(rec(1, Outcome::Succeeded, "i1"));
        l.put(rec(2, Outcome::Succeeded, "i2"));
        l.put(rec(3, Outcome::Failed, "i3"));
        l.put(rec(4, Outcome::Succeeded, "i4"));
        let (live, t) = pick(&l, "prod", None).unwrap();
        assert_eq!((live.release, t.release), (4, 2));
        assert_eq!(pick(&l, "prod", Some(1)).unwrap().1.release, 1);
        assert!(matches!(
            pick(&l, "prod", Some(3)),
            Err(RollbackError::NotServable(3))
        ));
        assert!(matches!(
            pick(&l, "prod", Some(4)),
            Err(RollbackError::IsLive { .. })
        ));
        assert!(matches!(
            pick(&Ledger::default(), "prod", None),
            Err(RollbackError::NothingLive { .. })
        ));
    }
}
