//! The deploy sequence (see the module above for the order and its guarantees).

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::ledger::{Kind, Ledger, Outcome, Record};
use super::model::{self, Flavor, Release, OVERRIDE_FILE};
use super::settings::Settings;
use super::{gate, lock, prune, target, Options, Steps};
use crate::compose::{self, Compose};
use crate::engine::{Engine, FileEntry};
use crate::error::Hinted;
use crate::git::Repo;
use crate::media::Media;
use crate::names::EnvName;
use crate::project::Project;
use crate::restore::Db;
use crate::store::Store;
use crate::ui::{self, Printer};

/// The secrets of `env` as (key, value) pairs, decrypted in memory.
pub(crate) fn secrets(project: &Project, env: &EnvName) -> anyhow::Result<Vec<(String, String)>> {
    match crate::secrets::load(&project.root, env)? {
        Some(s) => Ok(s.entries().to_vec()),
        None => Err(Hinted::new(
            format!("environment `{env}` has no secrets (secrets/{env}.env.age)"),
            format!("set them first: `countable secrets edit {env}` (DJANGO_SECRET_KEY, POSTGRES_PASSWORD, …)"),
        )
        .into()),
    }
}

/// Everything one deploy knows once preflight has passed.
pub(crate) struct Plan {
    pub(crate) settings: Settings,
    pub(crate) sha: String,
    pub(crate) git_ref: String,
    pub(crate) by: String,
    /// The tree the image is built from (the working tree, or a checkout of --ref).
    pub(crate) tree: PathBuf,
    pub(crate) secrets: Vec<(String, String)>,
    pub(crate) shape: model::Shape,
}

impl Plan {
    /// The compose files of the tree, as paths compose can read here.
    pub(crate) fn base_files(&self) -> Vec<String> {
        self.settings
            .compose_files
            .iter()
            .map(|f| self.tree.join(f).display().to_string())
            .collect()
    }

    /// The secrets and the compose files' shape of `env` in the project's tree, read
    /// first: a rollback refuses on them before it reaches a host.
    pub(crate) fn rollback_inputs(
        project: &Project,
        env: &EnvName,
        settings: &Settings,
    ) -> anyhow::Result<(Vec<(String, String)>, model::Shape)> {
        Ok((
            secrets(project, env)?,
            model::shape(&read_files(&project.root, &settings.compose_files)?)?,
        ))
    }

    /// A rollback to `target`: its commit, the project's own tree and files (as on
    /// one host), with what [`Plan::rollback_inputs`] read.
    pub(crate) fn for_rollback(
        project: &Project,
        settings: &Settings,
        target: &Record,
        (secrets, shape): (Vec<(String, String)>, model::Shape),
    ) -> Self {
        Plan {
            settings: settings.clone(),
            sha: target.git_sha.clone(),
            git_ref: format!("rollback to {}", target.release),
            by: Repo::open(&project.root)
                .map(|r| r.user())
                .unwrap_or_else(|_| "unknown".into()),
            tree: project.root.clone(),
            secrets,
            shape,
        }
    }
}

/// The checked backup a release takes before it changes anything (the `backup`
/// command's own function, media included); its key.
pub(crate) async fn backup_first(
    plan: &Plan,
    db: &Db,
    store: &Store,
    printer: &Printer,
) -> anyhow::Result<String> {
    let s = &plan.settings;
    let media = Media::resolve(&s.environment, &plan.shape.volumes, &s.compose_project, db).await?;
    let backed = crate::backup::backup(
        db,
        s.env.as_str(),
        store,
        crate::backup::Compress::None,
        &media,
        printer,
    )
    .await?;
    Ok(backed.manifest.key)
}

/// Deploy `env`; the completed ledger record (none for `--dry-run`).
pub async fn deploy(
    project: &Project,
    env: &EnvName,
    opts: &Options,
    printer: &Printer,
) -> anyhow::Result<Option<Record>> {
    let settings = Settings::resolve(project, env)?;
    let repo = Repo::open(&project.root)?;
    let sha = repo.sha(opts.git_ref.as_deref().unwrap_or("HEAD"))?;
    preflight(&repo, &settings, &sha, opts)?;
    let checkout = match &opts.git_ref {
        Some(_) if repo.sha("HEAD")? != sha => Some(repo.checkout(&sha)?),
        _ => None,
    };
    let tree = checkout
        .as_ref()
        .map(|c| c.path.clone())
        .unwrap_or_else(|| project.root.clone());
    let secrets = secrets(project, env)?;
    let shape = model::shape(&read_files(&tree, &settings.compose_files)?)?;
    let plan = Plan {
        git_ref: opts.git_ref.clone().unwrap_or_else(|| repo.current_ref()),
        by: repo.user(),
        settings,
        sha,
        tree,
        secrets,
        shape,
    };
    if opts.dry_run {
        dry_run(&plan, printer)?;
        return Ok(None);
    }
    if plan.settings.environment.is_swarm() {
        return crate::swarm::deploy::deploy(project, &plan, opts, printer)
            .await
            .map(Some);
    }
    run(project, &plan, opts, printer).await.map(Some)
}

/// The text of each of `files` (compose files) under `tree`.
pub(crate) fn read_files(tree: &Path, files: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    files
        .iter()
        .map(|f| {
            let p = tree.join(f);
            std::fs::read_to_string(&p)
                .with_context(|| format!("reading {}", p.display()))
                .map(|t| (f.clone(), t))
        })
        .collect()
}

pub(crate) fn preflight(
    repo: &Repo,
    s: &Settings,
    sha: &str,
    opts: &Options,
) -> anyhow::Result<()> {
    if opts.git_ref.is_none() && !opts.allow_dirty {
        let dirty = repo.dirty_files()?;
        if !dirty.is_empty() {
            let shown: Vec<&str> = dirty.iter().take(5).map(String::as_str).collect();
            return Err(Hinted::new(
                format!(
                    "the working tree has uncommitted changes ({}{}): the image would not be commit {}",
                    shown.join(", "),
                    if dirty.len() > 5 { ", …" } else { "" },
                    &sha[..12.min(sha.len())]
                ),
                format!("commit or stash them, or deploy anyway with `countable deploy {} --allow-dirty`", s.env),
            )
            .into());
        }
    }
    if let Some(branch) = &s.branch {
        if !opts.force && !repo.on_branch(sha, branch) {
            return Err(Hinted::new(
                format!(
                    "commit {} is not on `{branch}`, the branch that deploys to {}",
                    &sha[..12.min(sha.len())],
                    s.env
                ),
                format!("merge it into {branch} first, or deploy it anyway with `countable deploy {} --force`", s.env),
            )
            .into());
        }
    }
    Ok(())
}

/// The compose program for the environment's host, acting on `files` (local paths)
/// with the project directory `current` on the host.
pub(crate) fn remote_compose(
    plan: &Plan,
    files: Vec<String>,
    scratch: &Path,
) -> anyhow::Result<Compose> {
    let s = &plan.settings;
    Ok(Compose::new(
        compose::detect()?,
        &s.compose_project,
        Path::new(&s.current_dir()),
        files,
    )
    .with_docker_host(s.docker_host.clone())
    .remote(scratch, plan.secrets.clone()))
}

/// [`Compose::run_teed`] on a blocking thread (the runtime is single-threaded), with
/// compose's reported failures turned into errors.
pub(crate) async fn compose_up(c: &Compose, args: &[&str], project: &str) -> anyhow::Result<()> {
    let (c2, args2): (Compose, Vec<String>) =
        (c.clone(), args.iter().map(|s| s.to_string()).collect());
    let teed = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args2.iter().map(String::as_str).collect();
        c2.run_teed(&refs, true)
    })
    .await??;
    teed.result(project)?;
    Ok(())
}

pub(crate) async fn capture(c: &Compose, args: &[&str]) -> anyhow::Result<String> {
    let (c2, args2): (Compose, Vec<String>) =
        (c.clone(), args.iter().map(|s| s.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args2.iter().map(String::as_str).collect();
        c2.capture(&refs)
    })
    .await?
}

fn dry_run(plan: &Plan, printer: &Printer) -> anyhow::Result<()> {
    let s = &plan.settings;
    if s.environment.is_swarm() {
        for l in crate::swarm::deploy::dry_run(plan)? {
            printer.data(&l);
        }
        return Ok(());
    }
    let host = s.docker_host.as_deref().unwrap_or("the local engine");
    let tag = s.image_tag(0, &plan.sha).replace("-0-", "-<n>-");
    let keys: Vec<&str> = plan.secrets.iter().map(|(k, _)| k.as_str()).collect();
    let files = plan.settings.compose_files.join(" -f ");
    let lines = [
        format!("# deploy {} ({}) of {} to {host}, by {}", &plan.sha[..12.min(plan.sha.len())], plan.git_ref, s.env, plan.by),
        format!("# secrets: {} keys from secrets/{}.env.age (values never printed): {}", keys.len(), s.env, keys.join(" ")),
        format!("DOCKER_HOST={host} docker compose -p {} up -d --wait --no-build {}", s.compose_project, s.db),
        format!("# lock: SELECT pg_try_advisory_lock(hashtext('countable:deploy')) in {}'s database", s.db),
        format!("docker compose -f {files} -f <build override> build {}   # tags {tag}", s.web),
        format!("# room: more than {} free on the host's Docker disk, the backup's size in the store", ui::human_bytes(super::space::HOST_RESERVE)),
        format!("# ship {tag} to {host} (docker save | docker load of the layers it lacks, within that room; skipped when the host has it)"),
        format!("countable backup {}", s.env),
        format!("# write {}/releases/<n>/ (compose files, {OVERRIDE_FILE}, .env mode 0600) and point {} at it", s.home(), s.current_dir()),
        format!("DOCKER_HOST={host} docker compose -p {} --project-directory {} up -d --no-build --no-deps --no-recreate --scale {}=<running+1> {}", s.compose_project, s.current_dir(), s.web, s.web),
        format!("# gate: the new container healthy (migrations extend the deadline up to {} s), then GET {} through nginx", s.migrate_timeout.as_secs(), s.health_path),
        format!("# switch: nginx {}/live.conf → {} and `nginx -s reload`; stop the old {} container (SIGTERM, graceful)", target::LIVE_DIR, s.alias(0).replace("r0", "r<n>"), s.web),
        format!("DOCKER_HOST={host} docker compose -p {} up -d --wait --no-build --no-deps --remove-orphans <other services>", s.compose_project),
        format!("# record the release in the ledger; keep {} release images on the host", s.keep_releases),
    ];
    for l in lines {
        printer.data(&l);
    }
    Ok(())
}

/// The migrations recorded in django_migrations (none before the first migrate).
pub(crate) async fn migrations(db: &Db) -> Vec<String> {
    db.sql(
        &db.name,
        "SELECT app || '.' || name FROM django_migrations ORDER BY id",
    )
    .await
    .map(|o| {
        o.lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn random_token() -> String {
    crate::envfile::random_password(32)
}

/// Where the health request goes: `url` of the environment, else the host of
/// `docker_host` on nginx's published port.
fn health_url(s: &Settings, config_json: &str) -> anyhow::Result<String> {
    let base = match &s.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let host = s
                .docker_host
                .as_deref()
                .and_then(|h| h.split("://").nth(1))
                .map(|h| {
                    h.rsplit('@')
                        .next()
                        .unwrap_or(h)
                        .split(':')
                        .next()
                        .unwrap_or(h)
                        .to_string()
                })
                .unwrap_or_else(|| "127.0.0.1".into());
            let port = published_port(config_json, &s.nginx).unwrap_or(80);
            format!("http://{host}:{port}")
        }
    };
    Ok(format!("{base}{}", s.health_path))
}

fn published_port(config_json: &str, nginx: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(config_json).ok()?;
    v.get("services")?
        .get(nginx)?
        .get("ports")?
        .as_array()?
        .iter()
        .find(|p| p.get("target").and_then(|t| t.as_u64()) == Some(80))
        .and_then(|p| p.get("published"))
        .and_then(|p| {
            p.as_str()
                .map(str::to_string)
                .or_else(|| p.as_u64().map(|n| n.to_string()))
        })
        .and_then(|p| p.parse().ok())
}

async fn run(
    project: &Project,
    plan: &Plan,
    opts: &Options,
    printer: &Printer,
) -> anyhow::Result<Record> {
    let s = &plan.settings;
    let mut steps = Steps::default();
    steps.begin("connect");
    let target_engine = Engine::connect_to(s.docker_host.as_deref()).await?;
    let local_engine = Engine::connect().await?;
    let store = Store::for_environment(
        s.env.as_str(),
        &project.config.environments[&s.env],
        &project.root,
    )
    .await?;
    let scratch = tempfile::Builder::new()
        .prefix("countable-deploy-")
        .tempdir()?;
    let base_files = plan.base_files();

    // The database first: the lock and the backup live in it.
    steps.begin("database");
    let provisional = scratch.path().join("provisional.yaml");
    let no_hashes = Default::default();
    let no_image = format!("{}-{}:none", s.project, s.web);
    std::fs::write(
        &provisional,
        model::render(
            &Release {
                settings: s,
                number: 0,
                sha: &plan.sha,
                image: &no_image,
                secret_keys: &keys(plan),
                bind_hashes: &no_hashes,
            },
            &plan.shape,
            Flavor::Run,
        ),
    )?;
    let compose = remote_compose(
        plan,
        [base_files.clone(), vec![provisional.display().to_string()]].concat(),
        scratch.path(),
    )?;
    printer.status(&format!(
        "starting {}'s database ({}) on {}",
        s.env,
        s.db,
        s.docker_host.as_deref().unwrap_or("the local engine")
    ));
    // Running, healthy and as compose would make it: no `compose up` (a second over ssh).
    let hashes = config_hashes(&compose).await?;
    let db_container =
        match current_container(&target_engine, &s.compose_project, &s.db, &hashes).await? {
            Some(id) => id,
            None => {
                compose_up(
                    &compose,
                    &[
                        "up",
                        "-d",
                        "--wait",
                        "--wait-timeout",
                        "300",
                        "--no-build",
                        &s.db,
                    ],
                    &s.compose_project,
                )
                .await?;
                target_engine
                    .service_container(&s.compose_project, &s.db)
                    .await?
            }
        };
    let db = Db::discover(target_engine.clone(), db_container).await?;

    steps.begin("lock");
    let who = format!("{} release {{n}} by {}", s.env, plan.by);
    let (held, mut ledger, mut record) =
        open_release(&db, &store, s.env.as_str(), &who, opts.lock_wait, |n| {
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
    let number = record.release;
    printer.status(&format!(
        "release {number} of {}: {} ({})",
        s.env,
        &plan.sha[..12.min(plan.sha.len())],
        plan.git_ref
    ));

    let keep = prune::Keep {
        images: ledger.live().map(|r| r.image.clone()).into_iter().collect(),
        succeeded: ledger
            .records
            .iter()
            .filter(|r| r.outcome == Outcome::Succeeded)
            .map(|r| r.release)
            .collect(),
    };
    let outcome = release(
        plan,
        &target_engine,
        &local_engine,
        &db,
        &store,
        &keep,
        &base_files,
        scratch.path(),
        &mut record,
        &mut steps,
        printer,
    )
    .await;
    let outcome = close(
        &mut record,
        &mut steps,
        &db,
        outcome,
        &mut ledger,
        &store,
        held,
    )
    .await;
    match outcome {
        Ok(()) => {
            printer.success(&format!(
                "{} release {number} is live ({} s); `countable releases {}` lists the history",
                s.env,
                record.steps.iter().map(|x| x.seconds).sum::<f64>().round(),
                s.env
            ));
            Ok(record)
        }
        Err(e) => {
            let applied = record.applied();
            if !applied.is_empty() {
                printer.warn(&format!(
                    "release {number} failed after applying migrations: {} (the old code runs against them; `countable rollback {} --restore-db` brings back the pre-deploy backup)",
                    applied.join(", "),
                    s.env
                ));
            }
            Err(e)
        }
    }
}

fn release_of<'a>(
    plan: &'a Plan,
    number: u32,
    image: &'a str,
    keys: &'a [String],
    hashes: &'a std::collections::BTreeMap<String, String>,
) -> Release<'a> {
    Release {
        settings: &plan.settings,
        number,
        sha: &plan.sha,
        image,
        secret_keys: keys,
        bind_hashes: hashes,
    }
}

/// End a deploy's or rollback's record: step times, migrations after, outcome and the
/// first line of the error.
pub(crate) async fn complete(
    record: &mut Record,
    steps: &mut Steps,
    db: &Db,
    outcome: &anyhow::Result<()>,
) {
    steps.end(outcome.is_ok());
    record.steps = std::mem::take(&mut steps.done);
    record.migrations_after = migrations(db).await;
    record.finished_at = Some(now());
    record.outcome = match outcome {
        Ok(()) => Outcome::Succeeded,
        Err(_) => Outcome::Failed,
    };
    if let Err(e) = outcome {
        let first = crate::error::render(e)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        record.error = Some(first);
    }
}

/// Take the deploy lock of `env` as `who` (`{n}` becomes the next release's number)
/// and open the next release: the ledger read again under the lock, unfinished
/// records failed, `record(number)` saved as running with the migrations applied now.
pub(crate) async fn open_release(
    db: &Db,
    store: &Store,
    env: &str,
    who: &str,
    wait: std::time::Duration,
    record: impl FnOnce(u32) -> Record,
) -> anyhow::Result<(super::lock::DeployLock, Ledger, Record)> {
    let next = Ledger::load(store).await?.next_number();
    let held =
        lock::DeployLock::take(db, env, &who.replace("{n}", &next.to_string()), wait).await?;
    let mut ledger = Ledger::load(store).await?;
    abandon_unfinished(&mut ledger);
    let mut record = record(ledger.next_number());
    // Read under the lock: another deploy's migrations are not this one's.
    record.migrations_before = migrations(db).await;
    ledger.put(record.clone());
    ledger.save(store).await?;
    Ok((held, ledger, record))
}

/// End a release opened by [`open_release`]: its record completed (see [`complete`])
/// and saved, the lock released; then the outcome.
pub(crate) async fn close(
    record: &mut Record,
    steps: &mut Steps,
    db: &Db,
    outcome: anyhow::Result<()>,
    ledger: &mut Ledger,
    store: &Store,
    held: super::lock::DeployLock,
) -> anyhow::Result<()> {
    complete(record, steps, db, &outcome).await;
    ledger.put(record.clone());
    let saved = ledger.save(store).await;
    held.release().await?;
    saved?;
    outcome
}

/// Under the lock, a record still `running` belongs to a deploy that ended without
/// finishing (killed, or its machine lost): it failed.
pub(crate) fn abandon_unfinished(ledger: &mut Ledger) {
    for r in ledger
        .records
        .iter_mut()
        .filter(|r| r.outcome == Outcome::Running)
    {
        r.outcome = Outcome::Failed;
        r.error = Some("abandoned: the deploy ended before it finished (killed?)".into());
    }
}

pub(crate) fn keys(plan: &Plan) -> Vec<String> {
    plan.secrets.iter().map(|(k, _)| k.clone()).collect()
}

/// Build, ship, write, start, gate and switch. On a failure before the switch the
/// candidate is removed and the host is put back as it was.
#[allow(clippy::too_many_arguments)]
async fn release(
    plan: &Plan,
    host: &Engine,
    local: &Engine,
    db: &Db,
    store: &Store,
    keep: &prune::Keep,
    base_files: &[String],
    scratch: &Path,
    record: &mut Record,
    steps: &mut Steps,
    printer: &Printer,
) -> anyhow::Result<()> {
    let s = &plan.settings;
    let number = record.release;

    // Built first: a build that fails costs no backup, and the backup is taken as close
    // to the migrations as it can be. The host's room is read meanwhile (round trips
    // over ssh while the build works here); a refusal waits for nothing but the build.
    steps.begin("build");
    let (info, budget) = tokio::join!(
        build(
            plan,
            local,
            base_files,
            scratch,
            number,
            &record.image,
            printer
        ),
        room(host, db, store, s, printer)
    );
    let info = info?;
    let budget = budget?;
    record.image_id = info.id.clone();

    // Shipped before the backup: a host without room refuses before anything is
    // taken or changed (an image beside the serving one changes nothing).
    steps.begin("ship");
    if host.image_info(&info.id).await?.is_some() {
        if !host.has_image(&record.image).await? {
            host.tag(&info.id, &record.image).await?;
        }
        printer.status(&format!(
            "the host already has {} (0 bytes shipped)",
            record.image
        ));
    } else if s.registry.is_some() {
        printer.status(&format!(
            "pushing {} to its registry; the host pulls it",
            record.image
        ));
        local.push(&record.image, |_| {}).await?;
        host.pull(&record.image).await?;
        printer.status(&format!("the host pulled {}", record.image));
    } else {
        let bar = printer.bytes_bar(
            Some(info.size),
            &format!("shipping {} to the host", record.image),
        );
        let b = bar.clone();
        let shipped = host
            .ship_image(
                local,
                &record.image,
                budget.as_ref().map(|b| b.spare),
                move |n| b.set_position(n),
            )
            .await;
        bar.finish_and_clear();
        let shipped = match (shipped, budget) {
            (Err(crate::engine::EngineError::NoRoom { needed, .. }), Some(b)) => {
                return Err(super::space::image_refused(s.env.as_str(), &b, needed).into())
            }
            (r, _) => r?,
        };
        record.bytes_shipped = shipped.sent;
        printer.status(&format!(
            "shipped {} ({}: the layers the host lacked, {} of its {}; {} layer(s) it had stayed here)",
            record.image,
            ui::human_bytes(shipped.sent),
            ui::human_bytes(shipped.layer_bytes),
            ui::human_bytes(info.size),
            shipped.layers_left_out
        ));
    }

    steps.begin("backup");
    record.backup_key = Some(backup_first(plan, db, store, printer).await?);

    roll_out(
        plan, host, base_files, scratch, record, steps, printer, keep,
    )
    .await
}

/// Build the release's image `image` where countable runs, from the project's compose
/// files and a build override (tag and labels); what the engine says of it.
pub(crate) async fn build(
    plan: &Plan,
    local: &Engine,
    base_files: &[String],
    scratch: &Path,
    number: u32,
    image: &str,
    printer: &Printer,
) -> anyhow::Result<crate::engine::ImageInfo> {
    let s = &plan.settings;
    let build_override = scratch.join("build.yaml");
    std::fs::write(
        &build_override,
        model::render_build(s, number, &plan.sha, image, &plan.shape),
    )?;
    let build = Compose::new(
        compose::detect()?,
        &s.compose_project,
        &plan.tree,
        [
            base_files.to_vec(),
            vec![build_override.display().to_string()],
        ]
        .concat(),
    )
    .remote(&plan.tree, plan.secrets.clone());
    printer.status(&format!("building {image}"));
    compose_up(&build, &["build", s.web.as_str()], &s.compose_project).await?;
    local.image_info(image).await?.with_context(|| {
        format!("the build did not produce {image} (compose's output above says why)")
    })
}

/// The disk preflight (see `space`): the host's free space read through a helper
/// container of the db's image (it is on the host: the db runs), the store's locally.
/// The host's budget for the image's layers, enforced while they stream.
async fn room(
    host: &Engine,
    db: &Db,
    store: &Store,
    s: &Settings,
    printer: &Printer,
) -> anyhow::Result<Option<super::space::Budget>> {
    let db_image = host.image_id_of(&db.container).await?;
    let (host_root, host_free) = host
        .data_root_free(&format!("{}-countable-df", s.compose_project), &db_image)
        .await?;
    let store_free = store.free_space();
    let backup_estimate = match store_free {
        None => 0,
        Some(_) => {
            let newest = store
                .list()
                .await?
                .into_iter()
                .find(|b| b.taken_at().is_some())
                .map(|b| b.size);
            let db_bytes = db
                .sql(&db.name, "SELECT pg_database_size(current_database())")
                .await
                .ok()
                .and_then(|o| o.trim().parse().ok());
            super::space::backup_estimate(newest, db_bytes)
        }
    };
    let r = super::space::Room {
        host_root,
        host_free,
        store: store.location(),
        store_free,
        backup_estimate,
    };
    if r.host_free.is_none() {
        printer.warn(&format!(
            "could not read the free space of the host's Docker disk ({}); deploying without that check",
            r.host_root
        ));
    }
    super::space::check(s.env.as_str(), &r)?;
    Ok(super::space::Budget::of(&r))
}

/// Write the release directory, point `current` at it, start, gate and switch; then
/// prune images and release directories beyond `keep_releases`, never the live one,
/// the one before it, or `protect`. A failure puts `current` back.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn roll_out(
    plan: &Plan,
    host: &Engine,
    base_files: &[String],
    scratch: &Path,
    record: &mut Record,
    steps: &mut Steps,
    printer: &Printer,
    protect: &prune::Keep,
) -> anyhow::Result<()> {
    let s = &plan.settings;
    let number = record.release;
    steps.begin("release files");
    let keys = keys(plan);
    let none = std::collections::BTreeMap::new();
    let run_override = scratch.join(OVERRIDE_FILE);
    let first = release_of(plan, number, &record.image, &keys, &none);
    std::fs::write(
        &run_override,
        model::render(&first, &plan.shape, Flavor::Run),
    )?;
    let files: Vec<String> = [
        base_files.to_vec(),
        vec![run_override.display().to_string()],
    ]
    .concat();
    let compose = remote_compose(plan, files.clone(), scratch)?;
    let config = capture(&compose, &["config", "--format", "json"]).await?;
    let binds = model::bind_sources(&config, &s.current_dir())?;
    let (mut bundle, mut hashes) = super::bundle::collect(&plan.tree, &s.compose_files, &binds)?;
    super::tls::prepare(
        host,
        s,
        &plan.tree,
        &record.image,
        &config,
        &mut bundle,
        &mut hashes,
        printer,
    )
    .await?;
    let rel = release_of(plan, number, &record.image, &keys, &hashes);
    std::fs::write(&run_override, model::render(&rel, &plan.shape, Flavor::Run))?;
    let compose = remote_compose(plan, files, scratch)?;
    bundle.push(FileEntry {
        path: OVERRIDE_FILE.into(),
        bytes: model::render(&rel, &plan.shape, Flavor::Target).into_bytes(),
        mode: 0o644,
    });
    bundle.push(FileEntry {
        path: ".env".into(),
        bytes: crate::envfile::render(
            &plan
                .secrets
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect::<Vec<_>>(),
        )
        .into_bytes(),
        mode: 0o600,
    });
    let home = target::Home::open(host, s, &record.image).await?;
    let previous = home.current().await?;
    home.write_release(number, &bundle).await?;
    home.set_current(number).await?;

    let switched = start_gate_switch(
        plan, host, &compose, &config, record, steps, printer, previous,
    )
    .await;
    if switched.is_err() {
        // Put the host back as it was: the old release's directory and containers.
        if let Some(p) = previous {
            let _ = home.set_current(p).await;
        }
    } else {
        let mut keep: Vec<u32> = vec![number];
        keep.extend(previous);
        let mut protect = protect.clone();
        protect.images.push(record.image.clone());
        protect.succeeded.push(number);
        steps.begin("prune");
        let (bytes, removed) = prune::prune(host, s, &protect).await.unwrap_or_default();
        let live_images: Vec<u32> = (number.saturating_sub(s.keep_releases)..=number).collect();
        let _ = home
            .remove_releases_except(&[keep.clone(), live_images].concat())
            .await;
        if !removed.is_empty() {
            printer.status(&format!(
                "pruned releases {} from the host ({} reclaimed)",
                removed
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                ui::human_bytes(bytes)
            ));
        }
    }
    home.close().await;
    switched
}

/// Compose's own config hash of each service (the label compose sets on the
/// containers it makes), as the model `compose` renders now.
async fn config_hashes(
    compose: &Compose,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let out = capture(compose, &["config", "--hash", "*"]).await?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
        .map(|(svc, h)| (svc.to_string(), h.trim().to_string()))
        .collect())
}

/// The running container of `service` whose definition is `hashes[service]` and that is
/// healthy (or has no healthcheck): one `compose up` would leave it as it is.
async fn current_container(
    host: &Engine,
    project: &str,
    service: &str,
    hashes: &std::collections::HashMap<String, String>,
) -> anyhow::Result<Option<String>> {
    let listed = host.project_services(project).await?;
    current_among(host, &listed, service, hashes).await
}

/// [`current_container`] among the project's containers as `listed` once.
async fn current_among(
    host: &Engine,
    listed: &[crate::engine::ServiceState],
    service: &str,
    hashes: &std::collections::HashMap<String, String>,
) -> anyhow::Result<Option<String>> {
    let Some(want) = hashes.get(service) else {
        return Ok(None);
    };
    for c in listed {
        if c.service != service || c.state != "running" {
            continue;
        }
        let labels = host.container_labels(&c.id).await?;
        let health = host.health(&c.id).await?;
        if labels.get("com.docker.compose.config-hash") == Some(want)
            && matches!(health.health.as_deref(), None | Some("healthy"))
        {
            return Ok(Some(c.id.clone()));
        }
    }
    Ok(None)
}

/// Whether `compose up` of `services` (with `--remove-orphans`) would change nothing:
/// each runs as defined and healthy, and the project has no container of a service
/// the model lacks.
async fn converged(
    host: &Engine,
    compose: &Compose,
    project: &str,
    services: &[&str],
    model: &[String],
) -> anyhow::Result<bool> {
    let hashes = config_hashes(compose).await?;
    let listed = host.project_services(project).await?;
    if !listed.iter().all(|c| model.contains(&c.service)) {
        return Ok(false);
    }
    for svc in services {
        if current_among(host, &listed, svc, &hashes).await?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Start the candidate beside the old release, gate it, and switch nginx to it.
#[allow(clippy::too_many_arguments)]
async fn start_gate_switch(
    plan: &Plan,
    host: &Engine,
    compose: &Compose,
    config: &str,
    record: &mut Record,
    steps: &mut Steps,
    printer: &Printer,
    previous: Option<u32>,
) -> anyhow::Result<()> {
    let s = &plan.settings;
    let number = record.release;
    steps.begin("start");
    let before = target::release_containers(host, s, &s.web).await?;
    // A stopped web container (a killed deploy's, or one a restore stopped) would be
    // started again by compose instead of a new one: it goes first.
    for (id, _, _, running) in &before {
        if !running {
            let _ = host.remove(id).await;
        }
    }
    let old: Vec<(String, String, Option<u32>, bool)> =
        before.into_iter().filter(|c| c.3).collect();
    let scale = format!("{}={}", s.web, old.len() + 1);
    printer.status(&format!(
        "starting release {number} beside {} running {} container(s)",
        old.len(),
        s.web
    ));
    let started = compose_up(
        compose,
        &[
            "up",
            "-d",
            "--no-build",
            "--no-deps",
            "--no-recreate",
            "--scale",
            &scale,
            &s.web,
        ],
        &s.compose_project,
    )
    .await;
    let candidates: Vec<String> = target::release_containers(host, s, &s.web)
        .await?
        .into_iter()
        .filter(|c| c.2 == Some(number))
        .map(|c| c.0)
        .collect();
    let fail = |e: anyhow::Error| async {
        for c in &candidates {
            let _ = host.remove(c).await;
        }
        Err::<(), anyhow::Error>(e)
    };
    if let Err(e) = started {
        return fail(e).await;
    }
    let Some(candidate) = candidates.first().cloned() else {
        return fail(anyhow::anyhow!(
            "compose started no container for release {number}"
        ))
        .await;
    };

    steps.begin("health");
    match gate::wait_healthy(host, &candidate, s.migrate_timeout, printer).await {
        Ok(w) => {
            if !w.applying.is_empty() {
                printer.status(&format!("migrations applied: {}", w.applying.join(", ")));
            }
        }
        Err(e) => {
            if let Some(log) = e.log() {
                printer.note(&format!("the new container's last lines:\n{log}"));
            }
            return fail(e.into()).await;
        }
    }
    let nginx_running = target::release_containers(host, s, &s.nginx)
        .await?
        .iter()
        .any(|c| c.3);
    let others: Vec<&str> = plan
        .shape
        .services
        .iter()
        .map(String::as_str)
        .filter(|x| *x != s.web)
        .collect();
    let mut converge: Vec<&str> = vec![
        "up",
        "-d",
        "--wait",
        "--wait-timeout",
        "300",
        "--no-build",
        "--no-deps",
        "--remove-orphans",
    ];
    converge.extend(&others);
    if !nginx_running {
        if let Err(e) = compose_up(compose, &converge, &s.compose_project).await {
            return fail(e).await;
        }
    } else if current_container(
        host,
        &s.compose_project,
        &s.nginx,
        &config_hashes(compose).await?,
    )
    .await?
    .is_none()
    {
        // nginx's definition changed (its config, TLS's port 443 and mounts): recreate it
        // now, still sending requests to the serving release (live.conf is in a volume),
        // so a certificate is ordered through it and the candidate gated behind it.
        printer.status(&format!(
            "recreating {} with release {number}'s definition (it still serves the current release)",
            s.nginx
        ));
        let args = [
            "up",
            "-d",
            "--wait",
            "--wait-timeout",
            "120",
            "--no-build",
            "--no-deps",
            s.nginx.as_str(),
        ];
        if let Err(e) = compose_up(compose, &args, &s.compose_project).await {
            return fail(e).await;
        }
    }
    let nginx = host.service_container(&s.compose_project, &s.nginx).await?;
    super::tls::ensure(host, s, &record.image, &nginx, printer).await?;
    let url = super::tls::probe(s, config, health_url(s, config)?)?;
    let token = random_token();
    let live_before = previous.filter(|_| !old.is_empty());
    let checked = async {
        target::write_live(
            host,
            &nginx,
            &target::live_conf(s, live_before, Some((number, &token))),
        )
        .await?;
        gate::http_check(&url, s.domains.first().map(String::as_str), Some(&token)).await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = checked {
        let _ = target::write_live(host, &nginx, &target::live_conf(s, live_before, None)).await;
        return fail(e).await;
    }

    steps.begin("switch");
    target::write_live(host, &nginx, &target::live_conf(s, Some(number), None)).await?;
    printer.status(&format!(
        "nginx now sends {} to release {number}",
        s.domains.first().map(String::as_str).unwrap_or("requests")
    ));
    for (id, name, _, _) in &old {
        printer.status(&format!("draining {name}"));
        let _ = host.stop(id, 30).await;
        let _ = host.remove(id).await;
    }
    steps.begin("converge");
    // Nothing to converge (the usual deploy): no `compose up`, a second or two over ssh.
    if !converged(
        host,
        compose,
        &s.compose_project,
        &others,
        &plan.shape.services,
    )
    .await?
    {
        compose_up(compose, &converge, &s.compose_project).await?;
    }
    gate::http_check(&url, s.domains.first().map(String::as_str), None).await?;
    Ok(())
}
