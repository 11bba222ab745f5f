//! `countable secrets edit|set|unset|show|rekey <env>` and `countable secrets keygen`:
//! an environment's `.env`, encrypted with age in the repository as
//! `secrets/<env>.env.age`. No value is ever printed except by `show --reveal`.

use std::io::{IsTerminal, Read};

use crate::environment::Local;
use crate::names::EnvName;
use crate::secrets::{self, edit, keys, Change, EnvSecrets, SecretsError};
use crate::ui::Printer;

/// Manage an environment's secrets: its .env, encrypted with age as
/// secrets/<env>.env.age to the public keys in secrets/recipients.txt. Decrypts with
/// $COUNTABLE_AGE_KEY_FILE, else secrets/<env>.key and ~/.config/countable/age.key
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable secrets keygen                         your key, added to secrets/recipients.txt\n  countable secrets set prod DJANGO_DEBUG=0\n  pass show shop/prod | countable secrets set prod SECRET_KEY\n  countable secrets edit prod                      in $VISUAL or $EDITOR\n  countable secrets show prod                      keys only\n  countable secrets show prod --reveal --json | jq -r .SECRET_KEY\n  countable secrets unset prod OLD_TOKEN\n  countable secrets rekey prod                     after recipients.txt changed"
)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Edit the environment's .env in $VISUAL or $EDITOR (a private temporary file,
    /// removed afterwards); validated, then re-encrypted. Unchanged content writes nothing
    Edit(EnvArg),
    Set(SetArgs),
    Unset(UnsetArgs),
    Show(ShowArgs),
    /// Re-encrypt to the current recipients (after secrets/recipients.txt changed)
    Rekey(EnvArg),
    Keygen(KeygenArgs),
}

/// One environment.
#[derive(Debug, clap::Args)]
pub struct EnvArg {
    /// The environment (from countable.yml)
    pub env: String,
}

/// Set variables: KEY=VALUE, or KEY alone to read its value from standard input (one
/// trailing newline dropped), so that it never sits on a command line
#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The environment (from countable.yml)
    pub env: String,
    /// KEY=VALUE, or KEY (value on stdin; at most one)
    #[arg(required = true, value_name = "KEY[=VALUE]")]
    pub assignments: Vec<String>,
}

/// Remove variables
#[derive(Debug, clap::Args)]
pub struct UnsetArgs {
    /// The environment (from countable.yml)
    pub env: String,
    /// The variables to remove
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
}

/// List the environment's variables, values masked unless --reveal
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The environment (from countable.yml)
    pub env: String,
    /// Print the values: the .env itself, quoted as compose reads it
    #[arg(long)]
    pub reveal: bool,
    /// A JSON object {KEY: value}; values are null unless --reveal
    #[arg(long)]
    pub json: bool,
}

/// Create your age key (never overwriting one) and add its public key to
/// secrets/recipients.txt; prints the public key
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the key [default: $COUNTABLE_AGE_KEY_FILE, else
    /// ~/.config/countable/age.key]
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// The name written beside the public key in recipients.txt [default: $USER]
    #[arg(long)]
    pub name: Option<String>,
    /// Do not add the public key to the project's recipients
    #[arg(long)]
    pub no_add: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    if let Action::Keygen(a) = args.action {
        return keygen(a, printer);
    }
    let local = Local::open(&std::env::current_dir()?)?;
    let root = local.project.root.clone();
    match args.action {
        Action::Edit(a) => {
            let env = env_of(&local, &a.env)?;
            let change = edit::edit(&root, &env, &AskAgain(printer)).await?;
            report(printer, &root, &env, change, "edited");
        }
        Action::Set(a) => {
            let env = env_of(&local, &a.env)?;
            let pairs = secrets::parse_assignments(&a.assignments, |key| {
                if std::io::stdin().is_terminal() {
                    return printer
                        .secret(&format!("{key} (not echoed)"))
                        .map_err(std::io::Error::other);
                }
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map(|_| s)
            })?;
            let before = secrets::load(&root, &env)?;
            let mut next = before.clone().unwrap_or_default();
            for (k, v) in &pairs {
                next.set(k, v);
            }
            let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            let change = secrets::save_if_changed(&root, &env, before.as_ref(), &next)?;
            report(
                printer,
                &root,
                &env,
                change,
                &format!("set {}", keys.join(", ")),
            );
        }
        Action::Unset(a) => {
            let env = env_of(&local, &a.env)?;
            let mut next = loaded(&root, &env)?;
            for k in &a.keys {
                if !next.unset(k) {
                    return Err(SecretsError::NoSuchKey {
                        env,
                        key: k.clone(),
                    }
                    .into());
                }
            }
            let saved = secrets::save(&root, &env, &next)?;
            report(
                printer,
                &root,
                &env,
                Change::Saved(saved),
                &format!("removed {}", a.keys.join(", ")),
            );
        }
        Action::Show(a) => {
            let env = env_of(&local, &a.env)?;
            show(printer, &loaded(&root, &env)?, a.reveal, a.json)?;
        }
        Action::Rekey(a) => {
            let env = env_of(&local, &a.env)?;
            let saved = secrets::save(&root, &env, &loaded(&root, &env)?)?;
            report(printer, &root, &env, Change::Saved(saved), "re-encrypted");
        }
        Action::Keygen(_) => unreachable!("handled above"),
    }
    Ok(())
}

fn env_of(local: &Local, raw: &str) -> anyhow::Result<EnvName> {
    crate::data::resolve_env(local, Some(raw))
}

fn loaded(root: &std::path::Path, env: &EnvName) -> anyhow::Result<EnvSecrets> {
    Ok(
        secrets::load(root, env)?.ok_or_else(|| SecretsError::NoSecrets {
            env: env.clone(),
            file: secrets::secrets_file(root, env),
        })?,
    )
}

fn show(printer: &Printer, s: &EnvSecrets, reveal: bool, json: bool) -> anyhow::Result<()> {
    if json {
        let map: serde_json::Map<String, serde_json::Value> = s
            .entries()
            .iter()
            .map(|(k, v)| {
                let v = if reveal {
                    serde_json::Value::String(v.clone())
                } else {
                    serde_json::Value::Null
                };
                (k.clone(), v)
            })
            .collect();
        let text = zeroize::Zeroizing::new(serde_json::to_string_pretty(&map)?);
        printer.data(&text);
    } else if reveal {
        let text = zeroize::Zeroizing::new(s.render());
        printer.data(text.trim_end_matches('\n'));
    } else {
        for k in s.keys() {
            printer.data(&format!("{k}=********"));
        }
    }
    Ok(())
}

fn report(printer: &Printer, root: &std::path::Path, env: &EnvName, change: Change, what: &str) {
    match change {
        Change::Unchanged => printer.note(&format!("{env}: no change, nothing written")),
        Change::Saved(s) => {
            printer.success(&format!(
                "{env}: {what}; {} encrypted to {} recipient{}",
                s.file.strip_prefix(root).unwrap_or(&s.file).display(),
                s.recipients,
                if s.recipients == 1 { "" } else { "s" }
            ));
            if s.readable_by_you == Some(false) {
                printer.warn(&format!(
                    "your key is not among {env}'s recipients: you cannot read the file you just wrote"
                ));
            }
        }
    }
}

/// After an edit that does not parse: ask to edit again (a terminal), else give up.
struct AskAgain<'a>(&'a Printer);

impl edit::Retry for AskAgain<'_> {
    fn again(&self, error: &SecretsError) -> anyhow::Result<bool> {
        if !self.0.interactive() {
            return Ok(false);
        }
        self.0.warn(&error.to_string());
        self.0.confirm("edit again? (no: discard the edit)", true)
    }
}

fn keygen(args: KeygenArgs, printer: &Printer) -> anyhow::Result<()> {
    let path = args
        .output
        .or_else(keys::key_file_var)
        .or_else(keys::user_key_path)
        .ok_or_else(|| {
            crate::error::Hinted::new(
                "no place for your key: neither HOME nor XDG_CONFIG_HOME is set",
                "name the file: `countable secrets keygen --output FILE`",
            )
        })?;
    let public = if path.exists() {
        let keys = keys::read_key_file(&path)?;
        printer.note(&format!("{} exists; keeping it", path.display()));
        keys[0].public()
    } else {
        let public = keys::generate(&path)?;
        printer.success(&format!("created {} (mode 0600)", path.display()));
        public
    };
    if !args.no_add {
        if let Ok(local) = Local::open(&std::env::current_dir()?) {
            let file = keys::secrets_dir(&local.project.root).join("recipients.txt");
            let name = args
                .name
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unnamed".into());
            if keys::add_recipient(&file, &public, &name)? {
                printer.success(&format!(
                    "added to {}: commit it, then a teammate who can read an environment runs `countable secrets rekey <env>`",
                    file.display()
                ));
            }
        }
    }
    printer.data(&public);
    Ok(())
}
