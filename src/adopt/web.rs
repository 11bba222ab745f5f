//! How the web service runs an image: countable's own (its Dockerfile's entrypoint,
//! `/app`, port 8000) or the team's, with countable's entrypoint contract wrapped
//! around it. For the team's image everything is taken from what the project says: the
//! working directory and port from the Dockerfile (or the compose service), the static
//! and media roots from the settings, the command from CMD (or the compose service).

use super::compose::Service;
use super::dockerfile::Contract;

/// Where the compose files mount countable's entrypoint in the team's web container.
pub const ENTRYPOINT_IN_CONTAINER: &str = "/countable/entrypoint.sh";

/// What the compose files say about web's container.
#[derive(Debug, Clone, PartialEq)]
pub struct Web {
    pub workdir: String,
    /// The port its server listens on in the container.
    pub port: u16,
    /// Where collectstatic writes and uploads go (volumes are mounted there).
    pub static_root: String,
    pub media_root: String,
    /// The roots come from the settings' STATIC_ROOT / MEDIA_ROOT.
    pub roots_from_settings: (bool, bool),
    /// A new entrypoint: countable's, then the team's own (None: the image's own,
    /// countable's Dockerfile runs entrypoint.sh itself). As compose reads it: a `$`
    /// taken from the Dockerfile is written `$$`, so compose leaves it to the shell.
    pub entrypoint: Option<Vec<String>>,
    /// The command, set because a new entrypoint drops the image's CMD (None: the
    /// compose service sets its own, which stays; or the image's is kept). Escaped
    /// as `entrypoint`.
    pub command: Option<Vec<String>>,
}

impl Web {
    /// countable's own Dockerfile.
    pub fn countables() -> Self {
        Self {
            workdir: "/app".into(),
            port: 8000,
            static_root: "/app/staticfiles".into(),
            media_root: "/app/media".into(),
            roots_from_settings: (false, false),
            entrypoint: None,
            command: None,
        }
    }

    /// One line for `init`'s report: what runs, and where.
    pub fn describe(&self, service: &str) -> String {
        let mut what = Vec::new();
        let shown = |words: &[String]| words.join(" ").replace("$$", "$");
        if let Some(entry) = self.entrypoint.as_ref().filter(|e| e.len() > 2) {
            what.push(format!("your entrypoint `{}`", shown(&entry[2..])));
        }
        what.push(match &self.command {
            Some(c) => format!("the Dockerfile's command `{}`", shown(c)),
            None => "the command your compose file sets".into(),
        });
        let from = |yes: bool, key: &str| {
            if yes {
                format!(" (from {key})")
            } else {
                String::new()
            }
        };
        format!(
            "{service}: countable's entrypoint wraps {}; static files in {}{}, media in {}{}, port {}",
            what.join(" and "),
            self.static_root,
            from(self.roots_from_settings.0, "STATIC_ROOT"),
            self.media_root,
            from(self.roots_from_settings.1, "MEDIA_ROOT"),
            self.port
        )
    }
}

/// `STATIC_ROOT = BASE_DIR / "static"`, `os.path.join(BASE_DIR, "static")` →
/// `static` (under the project root, the WORKDIR); `"/srv/static"` → `/srv/static`.
/// Only these plain shapes: anything else (the environment, another base directory,
/// several parts, an f-string) is None, and the env variable countable sets decides,
/// with the settings line that reads it printed. `text` is the settings web runs,
/// base first, so the last assignment wins as in Python.
pub fn root_in_settings(text: &str, key: &str) -> Option<String> {
    let line = text.lines().rev().find(|l| {
        l.trim_start()
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })?;
    let rhs = line.split_once('=')?.1.split('#').next()?.trim();
    let quoted = |s: &str| -> Option<String> {
        let s = s.trim();
        let q = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let body = s.strip_prefix(q)?.strip_suffix(q)?.trim_end_matches('/');
        (!body.is_empty() && !body.contains(['"', '\'', '{', '}'])).then(|| body.to_string())
    };
    if let Some(path) = rhs
        .strip_prefix("BASE_DIR")
        .and_then(|r| r.trim().strip_prefix('/'))
    {
        return quoted(path).filter(|p| !p.starts_with('/'));
    }
    if let Some(args) = rhs
        .strip_prefix("os.path.join(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (base, part) = args.split_once(',')?;
        return (base.trim() == "BASE_DIR")
            .then(|| quoted(part))
            .flatten()
            .filter(|p| !p.starts_with('/') && !part.contains(','));
    }
    quoted(rhs).filter(|p| p.starts_with('/'))
}

/// The port a server command binds: gunicorn's `-b`/`--bind`, uWSGI's `--http`,
/// uvicorn's `--port`, `runserver [addr:]port`; None when it names none (or `$PORT`).
pub fn port_in_command(words: &[String]) -> Option<u16> {
    let tokens: Vec<&str> = words.iter().flat_map(|w| w.split_whitespace()).collect();
    let port_of = |t: &str| {
        t.rsplit(':')
            .next()?
            .trim_matches(['"', '\''])
            .parse::<u16>()
            .ok()
    };
    tokens.iter().enumerate().find_map(|(i, t)| {
        let next = tokens.get(i + 1).copied();
        let value = match *t {
            "-b" | "--bind" | "--http" | "--http-socket" | "--port" => next,
            "runserver" | "runserver_plus" => next.filter(|n| !n.starts_with('-')),
            _ => ["--bind=", "--port=", "--http="]
                .iter()
                .find_map(|p| t.strip_prefix(p)),
        };
        value.and_then(port_of)
    })
}

/// A settings root (`static`, `/srv/static`) as a path in the container.
fn in_container(root: Option<String>, workdir: &str, default: &str) -> String {
    match root {
        Some(r) if r.starts_with('/') => r,
        Some(r) => format!("{workdir}/{r}"),
        None => format!("{workdir}/{default}"),
    }
}

/// web running the team's image described by `contract`, with `service` (their compose
/// service, if any) and the project's settings text. Warnings say what may not fit.
pub fn theirs(
    contract: &Contract,
    service: Option<&Service>,
    settings: &str,
    warnings: &mut Vec<String>,
) -> Web {
    let workdir = service
        .and_then(|s| s.working_dir.clone())
        .or(contract.workdir.clone())
        .unwrap_or_else(|| "/".into())
        .trim_end_matches('/')
        .to_string();
    // Words from the Dockerfile go into a compose file: `$` becomes `$$`, so compose
    // leaves `$PORT` to the shell as the engine would have. A compose file's own words
    // are compose's already.
    let escape = |words: &Vec<String>| -> Vec<String> {
        words.iter().map(|w| w.replace('$', "$$")).collect()
    };
    let theirs = service
        .and_then(|s| s.entrypoint.clone())
        .or(contract.entrypoint_argv.as_ref().map(escape))
        .unwrap_or_default();
    let mut entrypoint = vec!["/bin/sh".to_string(), ENTRYPOINT_IN_CONTAINER.into()];
    entrypoint.extend(theirs);
    // The port the server really binds: its command's, then the compose service's
    // `ports:`, then EXPOSE / ENV PORT.
    let runs = service
        .and_then(|s| s.command.clone())
        .or(contract.cmd_argv.clone())
        .unwrap_or_default();
    let port = port_in_command(&runs)
        .or(service.and_then(|s| s.container_port))
        .or(contract.port)
        .unwrap_or(8000);
    let command = if service.is_some_and(|s| s.command.is_some()) {
        None
    } else {
        if contract.cmd_argv.is_none() && contract.entrypoint_argv.is_none() {
            warnings.push(format!("neither the compose file nor the Dockerfile says what web runs (no `command:`, no CMD): give it a `command:` (e.g. gunicorn on port {port}), since the wrapped entrypoint drops the base image's CMD"));
        }
        contract.cmd_argv.as_ref().map(escape)
    };
    let (static_set, media_set) = (
        root_in_settings(settings, "STATIC_ROOT"),
        root_in_settings(settings, "MEDIA_ROOT"),
    );
    let roots_from_settings = (static_set.is_some(), media_set.is_some());
    let static_root = in_container(static_set, &workdir, "staticfiles");
    let media_root = in_container(media_set, &workdir, "media");
    if let Some(user) = contract
        .user
        .as_deref()
        .filter(|u| *u != "root" && *u != "0")
    {
        warnings.push(format!("the Dockerfile runs as USER {user}: the volumes mounted at {static_root} and {media_root} must be writable by it; create both in the image and chown them to that user (`RUN mkdir -p … && chown …`), as countable's own Dockerfile does"));
    }
    Web {
        workdir,
        port,
        static_root,
        media_root,
        roots_from_settings,
        entrypoint: Some(entrypoint),
        command,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_from_the_settings() {
        let text = "BASE_DIR = Path(__file__).parent\nSTATIC_ROOT = BASE_DIR / \"static\"\nMEDIA_ROOT = os.path.join(BASE_DIR, 'uploads/')  # files\nSTATIC_ROOTS = 'x'\n";
        let root = |t: &str, k: &str| root_in_settings(t, k);
        assert_eq!(root(text, "STATIC_ROOT").as_deref(), Some("static"));
        assert_eq!(root(text, "MEDIA_ROOT").as_deref(), Some("uploads"));
        assert_eq!(
            root("STATIC_ROOT = '/srv/static'\n", "STATIC_ROOT").as_deref(),
            Some("/srv/static")
        );
        // Shapes it does not guess at: the env variable decides.
        for other in [
            "STATIC_ROOT = os.environ.get(\"DJANGO_STATIC_ROOT\", \"x\")",
            "STATIC_ROOT = os.path.join(BASE_DIR, \"static\", \"root\")",
            "STATIC_ROOT = Path(\"/var/www\") / \"static\"",
            "STATIC_ROOT = f\"{BASE_DIR}/static\"",
            "STATIC_ROOT = APPS_DIR / \"static\"",
            "STATIC_ROOT = BASE_DIR / \"static\" / \"root\"",
            "STATIC_ROOT = 'static'",
            "DEBUG = True",
        ] {
            assert_eq!(root(other, "STATIC_ROOT"), None, "{other}");
        }
        // The last assignment wins, as in Python.
        assert_eq!(
            root(
                "STATIC_ROOT = BASE_DIR / 'a'\nSTATIC_ROOT = BASE_DIR / 'b'\n",
                "STATIC_ROOT"
            )
            .as_deref(),
            Some("b")
        );
        let c = super::super::dockerfile::parse(
            "FROM python\nWORKDIR /code\nUSER app\nCMD [\"gunicorn\"]\n",
        );
        let mut warnings = Vec::new();
        let web = theirs(&c, None, text, &mut warnings);
        assert_eq!(web.static_root, "/code/static");
        assert_eq!(web.media_root, "/code/uploads");
        assert_eq!(web.port, 8000);
        // The port its command binds, else EXPOSE / ENV PORT; `$` kept for the shell.
        let words = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            port_in_command(&words("gunicorn -b 0.0.0.0:5000 x.wsgi")),
            Some(5000)
        );
        assert_eq!(port_in_command(&words("uwsgi --http :8081")), Some(8081));
        assert_eq!(
            port_in_command(&words("python manage.py runserver 0.0.0.0:8002")),
            Some(8002)
        );
        assert_eq!(
            port_in_command(&words("gunicorn --bind=:7000 x")),
            Some(7000)
        );
        assert_eq!(port_in_command(&words("gunicorn -b 0.0.0.0:$PORT x")), None);
        let c = super::super::dockerfile::parse(
            "FROM python\nENV PORT=8080\nCMD gunicorn x.wsgi -b 0.0.0.0:$PORT\n",
        );
        let by_env = theirs(&c, None, "", &mut Vec::new());
        assert_eq!(by_env.port, 8080);
        assert_eq!(
            by_env.command.as_deref().unwrap()[2],
            "gunicorn x.wsgi -b 0.0.0.0:$$PORT"
        );
        assert!(by_env
            .describe("web")
            .contains("`/bin/sh -c gunicorn x.wsgi -b 0.0.0.0:$PORT`"));
        assert_eq!(web.command.as_deref().unwrap(), ["gunicorn"]);
        assert!(warnings[0].contains("USER app"), "{warnings:?}");
        assert!(web
            .describe("web")
            .contains("wraps the Dockerfile's command `gunicorn`; static files in /code/static (from STATIC_ROOT)"));
    }
}
