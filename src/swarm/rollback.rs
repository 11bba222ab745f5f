//! `countable rollback <env> [RELEASE]` on a Swarm: countable's own ledger, not
//! Swarm's single previous spec. The target release's image (in the registry, or on
//! the nodes) goes out through the same stack deploy, rolling update and verification
//! as a deploy, under the deploy lock; the rollback is a new release.
//!
//! Schema awareness, as on one host: each image's `showmigrations --plan` (a one-off
//! container on the manager, on the stack's attachable network) says which applied
//! migrations the serving code knows and the target's does not. Reversible ones are
//! reversed with the serving image after a backup, before the switch; irreversible
//! ones refuse the rollback with their names (`--restore-db` is for one host only).

use super::deploy::{roll_out, Cluster};
use crate::deploy::ledger::{Kind, Ledger, Record};
use crate::deploy::rollback::{
    destinations, irreversible_in, manage, orphans, parse_plan, pick, Options,
};
use crate::deploy::run::{self, Plan};
use crate::deploy::settings::Settings;
use crate::deploy::Steps;
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
    let s = &settings;
    let store = Store::for_environment(
        env.as_str(),
        &project.config.environments[env],
        &project.root,
    )
    .await?;
    let ledger = Ledger::load(&store).await?;
    if opts.restore_db {
        return Err(Hinted::new(
            format!("`--restore-db` is for environments on one host; {env} runs on a Swarm"),
            format!("roll back without it (reversible migrations are reversed), or deploy a fix forward; a backup restores by hand: `countable backups {env}`"),
        )
        .into());
    }
    let (live, target) = pick(&ledger, env.as_str(), opts.target)?;
    let (live, target) = (live.clone(), target.clone());
    let inputs = Plan::rollback_inputs(project, env, &settings)?;
    let plan = Plan::for_rollback(project, &settings, &target, inputs);
    let base = plan.base_files();
    let scratch = tempfile::Builder::new()
        .prefix("countable-swarm-")
        .tempdir()?;
    let cluster = Cluster::open(&plan).await?;
    let (engine, container) = super::locate::running(
        &cluster.manager,
        s.docker_host.as_deref(),
        &s.compose_project,
        &s.db,
    )
    .await?;
    let db = crate::restore::Db::discover(engine, container).await?;

    // One-off containers join the stack's network, where `db` resolves.
    let network = format!(
        "networks:\n  default:\n    external: true\n    name: {}_default\n",
        s.compose_project
    );
    let oneoff = |image: String, args: Vec<String>| {
        let (plan, scratch, base, network) = (&plan, scratch.path(), &base, network.as_str());
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            manage(plan, scratch, base, &image, &refs, Some(network)).await
        }
    };
    printer.status(&format!(
        "reading the migrations of release {} and of release {} (serving)",
        target.release, live.release
    ));
    let plan_args = vec!["showmigrations".to_string(), "--plan".to_string()];
    let target_plan = parse_plan(&oneoff(target.image.clone(), plan_args.clone()).await?);
    let current_plan = parse_plan(&oneoff(live.image.clone(), plan_args).await?);
    let applied = run::migrations(&db).await;
    let undo = orphans(&applied, &current_plan, &target_plan);
    let dests = destinations(&undo, &target_plan);
    let mut irreversible = Vec::new();
    for (app, to) in &dests {
        let out = oneoff(
            live.image.clone(),
            vec!["migrate".into(), app.clone(), to.clone(), "--plan".into()],
        )
        .await?;
        irreversible.extend(irreversible_in(&out));
    }
    let path = if undo.is_empty() {
        "code only (no migration to undo)".to_string()
    } else if irreversible.is_empty() {
        format!(
            "reverse {} with release {}'s image, then roll",
            undo.join(", "),
            live.release
        )
    } else {
        format!("irreversible: {}", irreversible.join(", "))
    };
    if opts.dry_run {
        printer.data(&format!(
            "# roll {env} back from release {} to release {} ({}) on its Swarm",
            live.release, target.release, target.image
        ));
        printer.data(&format!("# schema: {path}"));
        for (app, to) in dests.iter().filter(|_| irreversible.is_empty()) {
            printer.data(&format!("docker compose -p {} run --rm --no-deps {} python manage.py migrate {app} {to}   # on the manager, on network {}_default", s.compose_project, s.web, s.compose_project));
        }
        printer.data(&format!(
            "DOCKER_HOST={} docker stack deploy --detach=false -c - {}   # web at {}",
            s.docker_host.as_deref().unwrap_or_default(),
            s.compose_project,
            target.image
        ));
        return Ok(None);
    }
    if !irreversible.is_empty() {
        return Err(Hinted::new(
            format!("release {} does not know {} applied migration(s) that cannot be reversed: {}", target.release, irreversible.len(), irreversible.join(", ")),
            "deploy a fix forward (on a Swarm, `--restore-db` is not offered: restore a backup by hand with `countable backups` and the pull-db engine if you must)",
        )
        .into());
    }
    printer.status(&format!(
        "rollback of {env} to release {}: {path}",
        target.release
    ));
    let mut steps = Steps::default();
    steps.begin("lock");
    let who = format!(
        "{env} rollback to release {} by {}",
        target.release, plan.by
    );
    let (held, mut ledger, mut record) =
        run::open_release(&db, &store, env.as_str(), &who, opts.lock_wait, |n| {
            Record {
                image_id: target.image_id.clone(),
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
    let number = record.release;
    let outcome = async {
        steps.begin("backup");
        record.backup_key = Some(run::backup_first(&plan, &db, &store, printer).await?);
        if !undo.is_empty() {
            steps.begin("reverse migrations");
            for (app, to) in &dests {
                printer.status(&format!(
                    "python manage.py migrate {app} {to} (with release {}'s code)",
                    live.release
                ));
                oneoff(
                    live.image.clone(),
                    vec![
                        "migrate".into(),
                        app.clone(),
                        to.clone(),
                        "--noinput".into(),
                    ],
                )
                .await?;
            }
        }
        if cluster.swarm.ship == crate::project::Ship::EveryNode {
            // A node that joined since, or pruned it, gets the target's image.
            steps.begin("ship");
            let local = crate::engine::Engine::connect().await?;
            super::deploy::ship(
                &cluster,
                &local,
                &target.image,
                s.docker_host.as_deref(),
                printer,
            )
            .await?;
        }
        roll_out(
            &plan,
            &cluster,
            scratch.path(),
            number,
            &target.image,
            &mut steps,
            printer,
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
        "{env} serves release {}'s code again (release {number})",
        target.release
    ));
    Ok(Some(record))
}
