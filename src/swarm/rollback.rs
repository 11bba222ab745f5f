//! `countable rollback <env> [RELEASE]` on a Swarm: countable's own ledger, not
//! Swarm's single previous spec. The target release's image (still in the registry,
//! or on the nodes) goes out through the same stack deploy, rolling update and
//! verification as a deploy, under the deploy lock; the rollback is a new release.
//!
//! Schema awareness: the migrations applied now that the serving release brought and
//! the target's does not know (from the ledger) are refused with their names, since
//! the old code would run against a schema it does not know; a rollback with none
//! is code only.

use super::deploy::{roll_out, Cluster};
use crate::deploy::ledger::{Kind, Ledger, Outcome, Record};
use crate::deploy::rollback::{orphans, pick, Options};
use crate::deploy::run::{self, Plan};
use crate::deploy::settings::Settings;
use crate::deploy::{lock, model, Steps};
use crate::error::Hinted;
use crate::names::EnvName;
use crate::project::Project;
use crate::store::Store;
use crate::ui::Printer;

pub(crate) async fn rollback(
    project: &Project,
    env: &EnvName,
    opts: &Options,
    printer: &Printer,
) -> anyhow::Result<Option<Record>> {
    let settings = Settings::resolve(project, env)?;
    let plan_of = |sha: &str, release: u32| -> anyhow::Result<Plan> {
        Ok(Plan {
            settings: settings.clone(),
            sha: sha.to_string(),
            git_ref: format!("rollback to {release}"),
            by: crate::git::Repo::open(&project.root)
                .map(|r| r.user())
                .unwrap_or_else(|_| "unknown".into()),
            tree: project.root.clone(),
            secrets: run::secrets(project, env)?,
            shape: model::shape(&run::read_files(&project.root, &settings.compose_files)?)?,
        })
    };
    let store = Store::for_environment(env.as_str(), &project.config.environments[env], &project.root).await?;
    let ledger = Ledger::load(&store).await?;
    let (live, target) = pick(&ledger, env.as_str(), opts.target)?;
    let (live, target) = (live.clone(), target.clone());
    let plan = plan_of(&target.git_sha, target.release)?;
    if opts.dry_run {
        printer.data(&format!("# roll {env} back from release {} to release {} ({}) on its Swarm", live.release, target.release, target.image));
        printer.data(&format!("DOCKER_HOST={} docker stack deploy --detach=false -c - {}   # web at {}", settings.docker_host.as_deref().unwrap_or_default(), settings.compose_project, target.image));
        return Ok(None);
    }
    let cluster = Cluster::open(&plan).await?;
    let (engine, container) = super::locate::running(&cluster.manager, settings.docker_host.as_deref(), &settings.compose_project, &settings.db).await?;
    let db = crate::restore::Db::discover(engine, container).await?;
    let applied = run::migrations(&db).await;
    let undo = orphans(&applied, &live.migrations_after, &target.migrations_after);
    if !undo.is_empty() {
        return Err(Hinted::new(
            format!("release {} does not know {} migration(s) applied since: {}", target.release, undo.len(), undo.join(", ")),
            format!("on a Swarm countable does not reverse migrations: deploy a fix forward, or roll back to a release that knows them (`countable releases {env}`)"),
        )
        .into());
    }
    let mut steps = Steps::default();
    steps.begin("lock");
    let who = format!("{env} rollback to release {} by {}", target.release, plan.by);
    let held = lock::DeployLock::take(&db, env.as_str(), &who, opts.lock_wait).await?;
    let mut ledger = Ledger::load(&store).await?;
    run::abandon_unfinished(&mut ledger);
    let number = ledger.next_number();
    let mut record = Record {
        release: number,
        kind: Kind::Rollback,
        outcome: Outcome::Running,
        git_sha: target.git_sha.clone(),
        git_ref: plan.git_ref.clone(),
        image: target.image.clone(),
        image_id: target.image_id.clone(),
        by: plan.by.clone(),
        started_at: run::now(),
        finished_at: None,
        backup_key: None,
        migrations_before: applied,
        migrations_after: vec![],
        bytes_shipped: 0,
        steps: vec![],
        error: None,
        rollback_to: Some(target.release),
        report: None,
    };
    ledger.put(record.clone());
    ledger.save(&store).await?;
    printer.status(&format!("rolling {env} back to release {} ({}) as release {number}", target.release, target.image));
    let scratch = tempfile::Builder::new().prefix("countable-swarm-").tempdir()?;
    let outcome = roll_out(&plan, &cluster, scratch.path(), number, &target.image, &mut steps, printer).await;
    run::complete(&mut record, &mut steps, &db, &outcome).await;
    ledger.put(record.clone());
    let saved = ledger.save(&store).await;
    held.release().await?;
    saved?;
    outcome?;
    printer.success(&format!("{env} serves release {}'s code again (release {number})", target.release));
    Ok(Some(record))
}
