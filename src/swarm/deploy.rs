//! `countable deploy <env>` (and `rollback`) on a Swarm. In order: the manager checked,
//! the compose model rendered with the environment's secrets, the db service first
//! (the lock and the backup live in it), the deploy lock, the image built here and
//! pushed to the registry (or streamed to every node), a backup, the stack deployed
//! with `docker stack deploy --detach=false`, then the truth read back: each
//! service's update state (`rollback_completed` or `paused` is a failure, with its
//! tasks' errors), replicas running as desired, the static job complete on every
//! node. The ledger records the release as on one host.
//!
//! Migrations run once per release: the first new web task's entrypoint runs them
//! under the advisory lock `countable:migrate` before it reports healthy; the rolling
//! update replaces one task at a time, so the others find nothing left to do.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{cli, locate, stack, Swarm};
use crate::compose::{self, Compose};
use crate::deploy::ledger::{Kind, Record};
use crate::deploy::model::{self, Flavor, Release};
use crate::deploy::run::{self, Plan};
use crate::deploy::settings::{LABEL_RELEASE, LABEL_SHA};
use crate::deploy::{Options, Steps};
use crate::engine::Engine;
use crate::error::Hinted;
use crate::project::{Project, Ship};
use crate::restore::Db;
use crate::store::Store;
use crate::ui::{self, Printer};

/// What one run against the cluster holds.
pub(crate) struct Cluster {
    pub manager: Engine,
    pub cli: cli::Docker,
    pub db_node: String,
    /// The stack has its db service already (read when the cluster was opened).
    pub db_service: bool,
    pub swarm: Swarm,
}

impl Cluster {
    /// Connect to the manager and check that it is one.
    pub async fn open(plan: &Plan) -> anyhow::Result<Self> {
        let s = &plan.settings;
        let swarm = Swarm::of(s)?;
        let manager = Engine::connect_to(s.docker_host.as_deref()).await?;
        let host = s.docker_host.as_deref().unwrap_or_default();
        let (_, hostname) = manager.swarm_manager().await?.ok_or_else(|| {
            Hinted::new(
                format!("{host} ({}'s docker_host) is not a Swarm manager", s.env),
                format!("make it one (`DOCKER_HOST={host} docker swarm init`), point docker_host at a manager, or set `mode: single` for {}", s.env),
            )
        })?;
        let (db_node, db_service) = db_node(&manager, s, &swarm, hostname).await?;
        Ok(Self {
            db_node,
            db_service,
            cli: cli::Docker::new(s.docker_host.clone()),
            manager,
            swarm,
        })
    }
}

/// The node the db runs on: where it runs now (its volume is there), else `db_node`,
/// else the manager. A `db_node` that is not where the db runs is refused: the db
/// would start on that node's empty volume. Also whether the db service exists.
async fn db_node(
    manager: &Engine,
    s: &crate::deploy::settings::Settings,
    swarm: &Swarm,
    manager_name: String,
) -> anyhow::Result<(String, bool)> {
    let full = format!("{}_{}", s.compose_project, s.db);
    let exists = manager
        .stack_services(&s.compose_project)
        .await?
        .iter()
        .any(|x| x.name == full);
    let now = if exists {
        let nodes = manager.swarm_nodes().await?;
        manager
            .service_tasks(&full)
            .await?
            .iter()
            .find(|t| t.desired_state == "running")
            .and_then(|t| nodes.iter().find(|n| n.id == t.node_id))
            .map(|n| n.hostname.clone())
    } else {
        None
    };
    let node: anyhow::Result<String> = match (now, &swarm.db_node) {
        (Some(now), Some(wanted)) if now != *wanted => Err(Hinted::new(
            format!("{}'s database runs on node {now}, but countable.yml says `db_node: {wanted}`: there it would start on an empty volume", s.env),
            format!("set `db_node: {now}`; to move the database, back it up (`countable backup {}`), move it, and restore it there", s.env),
        )
        .into()),
        (Some(now), _) => Ok(now),
        (None, Some(wanted)) => Ok(wanted.clone()),
        (None, None) => Ok(manager_name),
    };
    Ok((node?, exists))
}

/// Render the stack of release `number` (image `image`) from `plan`'s tree.
pub(crate) async fn render_stack(
    plan: &Plan,
    cluster: &Cluster,
    scratch: &Path,
    number: u32,
    image: &str,
) -> anyhow::Result<stack::Stack> {
    let s = &plan.settings;
    let keys = run::keys(plan);
    let none = Default::default();
    let release = Release {
        settings: s,
        number,
        sha: &plan.sha,
        image,
        secret_keys: &keys,
        bind_hashes: &none,
    };
    let override_file = scratch.join(model::OVERRIDE_FILE);
    std::fs::write(
        &override_file,
        model::render(&release, &plan.shape, Flavor::Run),
    )?;
    let mut files = plan.base_files();
    files.push(override_file.display().to_string());
    let compose = Compose::new(compose::detect()?, &s.compose_project, &plan.tree, files)
        .remote(&plan.tree, plan.secrets.clone());
    let json = run::capture(&compose, &["config", "--format", "json"]).await?;
    let model: serde_json::Value =
        serde_json::from_str(&json).context("reading `docker compose config --format json`")?;
    let labels = [
        (LABEL_RELEASE.to_string(), number.to_string()),
        (LABEL_SHA.to_string(), plan.sha.clone()),
    ]
    .into_iter()
    .collect();
    let spec = stack::Spec {
        web: &s.web,
        db: &s.db,
        nginx: &s.nginx,
        web_image: image,
        labels,
        replicas: &cluster.swarm.replicas,
        publish: cluster.swarm.publish,
        endpoint: cluster.swarm.endpoint,
        db_node: &cluster.db_node,
        media_volume: &cluster.swarm.media_volume,
    };
    Ok(stack::transform(&model, &spec, &|p| std::fs::read(p))?)
}

/// Only the db service of `full` (with the volumes and networks): a first deploy's
/// database, so the lock and the backup have somewhere to live.
fn db_only(full: &stack::Stack, db: &str) -> serde_json::Value {
    let mut doc = full.doc.clone();
    if let Some(services) = doc.get_mut("services").and_then(|s| s.as_object_mut()) {
        services.retain(|k, _| k == db);
    }
    doc
}

/// `docker stack deploy` of `doc`, its progress as status lines (one in five), and a
/// deadline.
async fn stack_deploy(
    plan: &Plan,
    cluster: &Cluster,
    doc: &serde_json::Value,
    prune: bool,
    deadline: Duration,
    printer: &Printer,
) -> anyhow::Result<()> {
    let s = &plan.settings;
    let bytes = serde_json::to_vec(doc)?;
    let resolve = resolve_image(cluster.swarm.ship);
    let seen = std::sync::atomic::AtomicU64::new(0);
    let deploy = cluster.cli.stack_deploy(
        &s.compose_project,
        &bytes,
        &plan.tree,
        resolve,
        prune,
        |line| {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let line = line.trim();
            if !line.is_empty()
                && !line.starts_with("verify:")
                && (n % 5 == 0
                    || line.contains("rollback")
                    || line.contains("Creating")
                    || line.contains("Updating"))
            {
                printer.status(&format!("swarm: {line}"));
            }
        },
    );
    match tokio::time::timeout(deadline, deploy).await {
        Ok(r) => r,
        Err(_) => Err(Hinted::new(
            format!(
                "`docker stack deploy` of {} did not converge within {} s (the Swarm goes on with it)",
                s.compose_project,
                deadline.as_secs()
            ),
            format!("see where it stands: `countable status {}`", s.env),
        )
        .into()),
    }
}

/// `--resolve-image`: pin the registry's digest, or use what each node has.
fn resolve_image(ship: Ship) -> &'static str {
    match ship {
        Ship::Registry => "always",
        Ship::EveryNode => "never",
    }
}

/// What Swarm says of the stack after a deploy: an error naming each service that
/// failed and why (its newest failed task's error).
pub(crate) async fn verify(
    cluster: &Cluster,
    stack_name: &str,
    stack: &stack::Stack,
    web_image: &str,
) -> anyhow::Result<()> {
    let services = cluster.manager.stack_services(stack_name).await?;
    let wanted: Vec<String> = stack
        .doc
        .get("services")
        .and_then(|s| s.as_object())
        .map(|m| m.keys().map(|k| format!("{stack_name}_{k}")).collect())
        .unwrap_or_default();
    let mut failures = Vec::new();
    for name in &wanted {
        let Some(svc) = services.iter().find(|s| &s.name == name) else {
            failures.push(format!("{name}: not created"));
            continue;
        };
        let why = || async {
            cluster
                .manager
                .service_tasks(name)
                .await
                .ok()
                .and_then(|tasks| {
                    tasks
                        .into_iter()
                        .find(|t| {
                            t.error.is_some() || matches!(t.state.as_str(), "failed" | "rejected")
                        })
                        .map(|t| t.error.unwrap_or(t.message))
                })
                .unwrap_or_else(|| "no task says why".into())
        };
        if let Some("rollback_started" | "rollback_completed" | "rollback_paused" | "paused") =
            svc.update_state.as_deref()
        {
            failures.push(format!(
                "{name}: the update was {} ({}); a new task: {}",
                svc.update_state
                    .as_deref()
                    .unwrap_or_default()
                    .replace('_', " "),
                svc.update_message.as_deref().unwrap_or("no message"),
                why().await
            ));
            continue;
        }
        if svc.mode.ends_with("-job") {
            // A node whose task of this image failed and none completed.
            let tasks = cluster.manager.service_tasks(name).await?;
            let mine = |t: &&crate::engine::swarm::Task| {
                t.image.split('@').next() == svc.image.split('@').next()
            };
            if let Some(t) = tasks.iter().filter(mine).find(|t| {
                matches!(t.state.as_str(), "failed" | "rejected")
                    && !tasks
                        .iter()
                        .filter(mine)
                        .any(|o| o.node_id == t.node_id && o.state == "complete")
            }) {
                failures.push(format!(
                    "{name}: {}",
                    t.error.clone().unwrap_or(t.message.clone())
                ));
            } else if let Some(t) = tasks.iter().filter(mine).find(|t| {
                t.desired_state == "complete"
                    && !matches!(
                        t.state.as_str(),
                        "complete" | "failed" | "rejected" | "shutdown"
                    )
            }) {
                failures.push(format!("{name}: a task has not finished ({})", t.state));
            }
        } else if svc.running < svc.desired {
            failures.push(format!(
                "{name}: {} of {} tasks running; a task: {}",
                svc.running,
                svc.desired,
                why().await
            ));
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    // Whether web took the new image decides what is serving now.
    let web = services
        .iter()
        .find(|x| x.name == format!("{stack_name}_{}", stack.web));
    let serving = match web {
        Some(w)
            if w.image.split('@').next() == Some(web_image)
                && !failures.iter().any(|f| f.starts_with(&w.name)) =>
        {
            format!(
                "{} runs the new release; the services above did not take it",
                stack.web
            )
        }
        _ => format!("{}'s old tasks keep serving", stack.web),
    };
    Err(Hinted::new(
        format!("the Swarm did not take the release:\n  {}", failures.join("\n  ")),
        format!("{serving}; `countable status <env>` shows each service, `countable logs --env <env> <service>` its tasks' logs"),
    )
    .into())
}

/// The move from one host (`mode: single` before): the environment's compose project
/// still runs on the manager. It is backed up, then its containers are stopped and
/// removed (db last) and its network too; its named volumes stay, and the stack, which
/// has the same name, mounts them. Nothing happens when no such container exists.
async fn retire_compose_project(
    plan: &Plan,
    cluster: &Cluster,
    store: &Store,
    printer: &Printer,
) -> anyhow::Result<()> {
    let s = &plan.settings;
    let mut states = cluster.manager.project_services(&s.compose_project).await?;
    if states.is_empty() {
        return Ok(());
    }
    printer.status(&format!(
        "{} runs as compose project {} on the manager: backing it up, then stopping it for the Swarm (its volumes stay; the stack mounts them)",
        s.env, s.compose_project
    ));
    if let Some(db) = states
        .iter()
        .find(|x| x.service == s.db && x.state == "running")
    {
        let db = Db::discover(cluster.manager.clone(), db.id.clone()).await?;
        run::backup_first(plan, &db, store, printer).await?;
    }
    states.sort_by_key(|x| x.service == s.db);
    for x in &states {
        cluster.manager.stop(&x.id, 40).await?;
        cluster.manager.remove(&x.id).await?;
    }
    cluster
        .manager
        .remove_network(&format!("{}_default", s.compose_project))
        .await?;
    Ok(())
}

/// The db of the stack; on a first deploy, the db service is deployed first.
async fn database(
    plan: &Plan,
    cluster: &Cluster,
    full: &stack::Stack,
    printer: &Printer,
) -> anyhow::Result<Db> {
    let s = &plan.settings;
    let host = s.docker_host.as_deref();
    // A first deploy (no db service yet) starts the db alone first; otherwise its
    // task is waited for (a restarting db is not a missing one).
    if !cluster.db_service {
        printer.status(&format!(
            "starting {}'s database ({}) on node {}",
            s.env, s.db, cluster.db_node
        ));
        stack_deploy(
            plan,
            cluster,
            &db_only(full, &s.db),
            false,
            Duration::from_secs(600),
            printer,
        )
        .await?;
    }
    let started = Instant::now();
    let (engine, container) = loop {
        match locate::running(&cluster.manager, host, &s.compose_project, &s.db).await {
            Ok(x) => break x,
            Err(e) if started.elapsed() > Duration::from_secs(300) => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let db = Db::discover(engine, container).await?;
    // A task is running before its healthcheck passes: wait until it answers.
    let started = Instant::now();
    while db.sql("postgres", "SELECT 1").await.is_err() {
        if started.elapsed() > Duration::from_secs(300) {
            anyhow::bail!(
                "the {} task of {} did not accept connections within 300 s",
                s.db,
                s.compose_project
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(db)
}

/// Deploy `plan` to its Swarm (see the module doc).
pub(crate) async fn deploy(
    project: &Project,
    plan: &Plan,
    opts: &Options,
    printer: &Printer,
) -> anyhow::Result<Record> {
    let s = &plan.settings;
    let mut steps = Steps::default();
    steps.begin("connect");
    let cluster = Cluster::open(plan).await?;
    let local = Engine::connect().await?;
    let store = Store::for_environment(
        s.env.as_str(),
        &project.config.environments[&s.env],
        &project.root,
    )
    .await?;
    let scratch = tempfile::Builder::new()
        .prefix("countable-swarm-")
        .tempdir()?;
    let base_files = plan.base_files();

    steps.begin("database");
    retire_compose_project(plan, &cluster, &store, printer).await?;
    let provisional = render_stack(plan, &cluster, scratch.path(), 0, "none").await?;
    let db = database(plan, &cluster, &provisional, printer).await?;

    steps.begin("lock");
    let who = format!("{} release {{n}} by {}", s.env, plan.by);
    let (held, mut ledger, mut record) =
        run::open_release(&db, &store, s.env.as_str(), &who, opts.lock_wait, |n| {
            Record::begin(
                n,
                Kind::Deploy,
                &plan.sha,
                &plan.git_ref,
                &s.image_tag(n, &plan.sha),
                &plan.by,
            )
        })
        .await?;
    let (number, image) = (record.release, record.image.clone());
    printer.status(&format!(
        "release {number} of {} on the Swarm: {} ({})",
        s.env,
        &plan.sha[..12.min(plan.sha.len())],
        plan.git_ref
    ));

    let outcome = async {
        steps.begin("build");
        let info = run::build(
            plan,
            &local,
            &base_files,
            scratch.path(),
            number,
            &image,
            printer,
        )
        .await?;
        record.image_id = info.id.clone();
        steps.begin("ship");
        record.bytes_shipped =
            ship(&cluster, &local, &image, s.docker_host.as_deref(), printer).await?;
        steps.begin("backup");
        record.backup_key = Some(run::backup_first(plan, &db, &store, printer).await?);
        roll_out(
            plan,
            &cluster,
            scratch.path(),
            number,
            &image,
            &mut steps,
            printer,
        )
        .await
    }
    .await;
    let closed = run::close(
        &mut record,
        &mut steps,
        &db,
        outcome,
        &mut ledger,
        &store,
        held,
    )
    .await;
    if closed.is_err() && !record.applied().is_empty() {
        printer.warn(&format!(
            "release {number} failed after applying migrations: {} (the old code runs against them; `countable rollback {}` reverses reversible ones)",
            record.applied().join(", "),
            s.env
        ));
    }
    closed?;
    printer.success(&format!(
        "{} release {number} is live on the Swarm ({} s); `countable status {}` shows where it runs",
        s.env,
        record.steps.iter().map(|x| x.seconds).sum::<f64>().round(),
        s.env
    ));
    Ok(record)
}

/// Render, deploy and verify release `number` with `image` (a deploy's or a
/// rollback's last step).
pub(crate) async fn roll_out(
    plan: &Plan,
    cluster: &Cluster,
    scratch: &Path,
    number: u32,
    image: &str,
    steps: &mut Steps,
    printer: &Printer,
) -> anyhow::Result<()> {
    let s = &plan.settings;
    steps.begin("stack");
    let stack = render_stack(plan, cluster, scratch, number, image).await?;
    printer.status(&format!(
        "docker stack deploy {} ({} web replicas, start-first, watched {} s each)",
        s.compose_project,
        cluster.swarm.replicas.get(&s.web).copied().unwrap_or(2),
        stack.monitor.as_secs()
    ));
    let deadline = s.migrate_timeout + stack.monitor * 4 + Duration::from_secs(600);
    let deployed = stack_deploy(plan, cluster, &stack.doc, true, deadline, printer).await;
    steps.begin("verify");
    let verified = verify(cluster, &s.compose_project, &stack, image).await;
    match (deployed, verified) {
        // Swarm's own account first; what the command said, under it.
        (Err(cli), Err(e)) => {
            return Err(e.context(format!(
                "docker stack deploy also failed: {}",
                crate::error::render(&cli)
                    .lines()
                    .next()
                    .unwrap_or_default()
            )))
        }
        (Ok(()), Err(e)) | (Err(e), Ok(())) => return Err(e),
        (Ok(()), Ok(())) => {}
    }
    cluster
        .cli
        .prune_configs(&s.compose_project, &stack.configs)
        .await;
    Ok(())
}

/// Get `image` to the nodes: push it to the registry (they pull it), or stream it to
/// each node's engine. The bytes streamed (0 through a registry).
pub(crate) async fn ship(
    cluster: &Cluster,
    local: &Engine,
    image: &str,
    manager_host: Option<&str>,
    printer: &Printer,
) -> anyhow::Result<u64> {
    match cluster.swarm.ship {
        Ship::Registry => {
            printer.status(&format!(
                "pushing {image} to its registry; the nodes pull it"
            ));
            local.push(image, |_| {}).await?;
            Ok(0)
        }
        Ship::EveryNode => {
            let mut sent = 0;
            for node in cluster.manager.swarm_nodes().await? {
                if node.state != "ready" {
                    printer.warn(&format!(
                        "node {} is {}: it does not get {image}",
                        node.hostname, node.state
                    ));
                    continue;
                }
                let host = locate::node_host(manager_host, &node.addr)
                    .with_context(|| format!("reaching node {} ({})", node.hostname, node.addr))?;
                let engine = Engine::connect_to(Some(&host)).await?;
                if engine.has_image(image).await? {
                    continue;
                }
                let shipped = engine.ship_image(local, image, None, |_| {}).await?;
                printer.status(&format!(
                    "shipped {image} to {} ({})",
                    node.hostname,
                    ui::human_bytes(shipped.sent)
                ));
                sent += shipped.sent;
            }
            Ok(sent)
        }
    }
}

/// What `deploy --dry-run` prints for a Swarm environment.
pub(crate) fn dry_run(plan: &Plan) -> anyhow::Result<Vec<String>> {
    let s = &plan.settings;
    let swarm = Swarm::of(s)?;
    let docker = cli::Docker::new(s.docker_host.clone());
    // The same argument builder as the run: `--dry-run` shows what runs.
    let line = |prune: bool| {
        let argv =
            cli::Docker::stack_deploy_args(&s.compose_project, resolve_image(swarm.ship), prune);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        docker.display(&refs)
    };
    let host = s.docker_host.as_deref().unwrap_or_default();
    let tag = s.image_tag(0, &plan.sha).replace("-0-", "-<n>-");
    let keys: Vec<&str> = plan.secrets.iter().map(|(k, _)| k.as_str()).collect();
    Ok(vec![
        format!("# deploy {} ({}) of {} to the Swarm managed by {host}, by {}", &plan.sha[..12.min(plan.sha.len())], plan.git_ref, s.env, plan.by),
        format!("# secrets: {} keys from secrets/{}.env.age (values never printed): {}", keys.len(), s.env, keys.join(" ")),
        format!("docker compose -p {} -f {} config --format json   # the model, .env and interpolation applied", s.compose_project, s.compose_files.join(" -f ")),
        format!("# the stack: build/depends_on/container_name/restart dropped; {} × {} start-first, rollback on failure; {} pinned to node {}; nginx on every node; bind-mounted files as content-hashed configs; {}-static collects static files on every node",
            swarm.replicas.get(&s.web).copied().unwrap_or(2), s.web, s.db, swarm.db_node.as_deref().unwrap_or("<the manager>"), s.web),
        format!("{}   # only {} on a first deploy", line(false), s.db),
        format!("# lock: the advisory lock countable:deploy in {}'s server", s.db),
        format!("docker compose -f … build {}   # tags {tag}", s.web),
        match swarm.ship {
            Ship::Registry => format!("docker push {tag}   # every node pulls it"),
            Ship::EveryNode => format!("# stream {tag} to each ready node's engine (the layers it lacks)"),
        },
        format!("countable backup {}", s.env),
        format!("{}   # the stack file on stdin", line(true)),
        "# verify: every service's UpdateStatus (rollback_completed or paused fails the deploy), replicas running as desired, the static job complete on every node".into(),
        "# record the release in the ledger".into(),
    ])
}
