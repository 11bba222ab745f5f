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
    /// countable's Dockerfile runs entrypoint.sh itself).
    pub entrypoint: Option<Vec<String>>,
    /// The command, set because a new entrypoint drops the image's CMD (None: the
    /// compose service sets its own, which stays; or the image's is kept).
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
        if let Some(entry) = self.entrypoint.as_ref().filter(|e| e.len() > 2) {
            what.push(format!("your entrypoint `{}`", entry[2..].join(" ")));
        }
        what.push(match &self.command {
            Some(c) => format!("the Dockerfile's command `{}`", c.join(" ")),
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

/// `STATIC_ROOT = BASE_DIR / "static"` → `static`; `os.path.join(BASE_DIR, "static")`
/// → `static`; `"/srv/static"` → `/srv/static`. None when it is not set, or comes from
/// the environment (then the env variable countable sets decides).
pub fn root_in_settings(text: &str, key: &str) -> Option<String> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(key) && l.contains('='))?;
    let rhs = line.split_once('=')?.1;
    if rhs.contains("environ") || rhs.contains("env(") || rhs.contains("getenv") {
        return None;
    }
    let literal = rhs
        .split(['"', '\''])
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .last()?
        .trim_end_matches('/');
    (!literal.is_empty()).then(|| literal.to_string())
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
    let theirs = service
        .and_then(|s| s.entrypoint.clone())
        .or(contract.entrypoint_argv.clone())
        .unwrap_or_default();
    let mut entrypoint = vec!["/bin/sh".to_string(), ENTRYPOINT_IN_CONTAINER.into()];
    entrypoint.extend(theirs);
    let port = contract.port.unwrap_or(8000);
    let command = if service.is_some_and(|s| s.sets_command) {
        None
    } else {
        if contract.cmd_argv.is_none() && contract.entrypoint_argv.is_none() {
            warnings.push(format!("neither the compose file nor the Dockerfile says what web runs (no `command:`, no CMD): give it a `command:` (e.g. gunicorn on port {port}), since the wrapped entrypoint drops the base image's CMD"));
        }
        contract.cmd_argv.clone()
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
        let text = "BASE_DIR = Path(__file__).parent\nSTATIC_ROOT = BASE_DIR / \"static\"\nMEDIA_ROOT = os.path.join(BASE_DIR, 'uploads/')\n";
        assert_eq!(
            root_in_settings(text, "STATIC_ROOT").as_deref(),
            Some("static")
        );
        assert_eq!(
            root_in_settings(text, "MEDIA_ROOT").as_deref(),
            Some("uploads")
        );
        assert_eq!(
            root_in_settings(
                "STATIC_ROOT = os.environ.get(\"DJANGO_STATIC_ROOT\", \"x\")\n",
                "STATIC_ROOT"
            ),
            None
        );
        assert_eq!(
            root_in_settings("STATIC_ROOT = '/srv/static'\n", "STATIC_ROOT").as_deref(),
            Some("/srv/static")
        );
        assert_eq!(root_in_settings("DEBUG = True\n", "STATIC_ROOT"), None);
        let c = super::super::dockerfile::parse(
            "FROM python\nWORKDIR /code\nUSER app\nCMD [\"gunicorn\"]\n",
        );
        let mut warnings = Vec::new();
        let web = theirs(&c, None, text, &mut warnings);
        assert_eq!(web.static_root, "/code/static");
        assert_eq!(web.media_root, "/code/uploads");
        assert_eq!(web.port, 8000);
        assert_eq!(web.command.as_deref().unwrap(), ["gunicorn"]);
        assert!(warnings[0].contains("USER app"), "{warnings:?}");
        assert!(web
            .describe("web")
            .contains("wraps the Dockerfile's command `gunicorn`; static files in /code/static (from STATIC_ROOT)"));
    }
}
