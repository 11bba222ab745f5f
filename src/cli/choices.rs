//! The project choices `new` and `init` share: flags, prompts for what is missing,
//! defaults without a terminal.

use crate::names::ProjectName;
use crate::scaffold::{self, Choices};
use crate::ui::Printer;

#[derive(Debug, clap::Args)]
pub struct ChoiceArgs {
    /// PostgreSQL major version (prompted; default 17)
    #[arg(long, value_parser = clap::value_parser!(u8).range(12..=18))]
    pub postgres: Option<u8>,
    /// Python version of the web image (prompted; default 3.12)
    #[arg(long)]
    pub python: Option<String>,
    /// Use PostGIS (the postgis/postgis image)
    #[arg(long, conflicts_with = "no_postgis")]
    pub postgis: bool,
    /// Plain PostgreSQL, no PostGIS (skips the prompt)
    #[arg(long)]
    pub no_postgis: bool,
    /// The port nginx publishes on the host (prompted; default 8000)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Database image instead of the official postgres/postgis one
    #[arg(long, value_name = "IMAGE", env = "COUNTABLE_DB_IMAGE")]
    pub db_image: Option<String>,
    /// Base image of the web Dockerfile instead of the official python one
    #[arg(long, value_name = "IMAGE", env = "COUNTABLE_PYTHON_IMAGE")]
    pub python_image: Option<String>,
    /// nginx image instead of the official one
    #[arg(long, value_name = "IMAGE", env = "COUNTABLE_NGINX_IMAGE")]
    pub nginx_image: Option<String>,
}

fn check_image(flag: &str, image: &Option<String>) -> anyhow::Result<()> {
    if let Some(i) = image {
        if i.trim().is_empty() || i.chars().any(char::is_whitespace) {
            return Err(crate::error::Hinted::new(
                format!("`{i}` is not an image name ({flag})"),
                format!("{flag} postgres:17 (an image reference without spaces)"),
            )
            .into());
        }
    }
    Ok(())
}

impl ChoiceArgs {
    /// Validate flags, then prompt (on a terminal) for what they leave open.
    pub fn resolve(&self, project: ProjectName, printer: &Printer) -> anyhow::Result<Choices> {
        check_image("--db-image", &self.db_image)?;
        check_image("--python-image", &self.python_image)?;
        check_image("--nginx-image", &self.nginx_image)?;
        if let Some(p) = &self.python {
            let ok = p.split('.').count() == 2
                && p.split('.')
                    .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            if !ok {
                return Err(crate::error::Hinted::new(
                    format!("`{p}` is not a Python version"),
                    "--python 3.12",
                )
                .into());
            }
        }
        let mut c = Choices::defaults(project);
        c.postgres_major = match self.postgres {
            Some(v) => v,
            None => {
                let items: Vec<String> = scaffold::POSTGRES_MAJORS
                    .iter()
                    .map(|v| format!("PostgreSQL {v}"))
                    .collect();
                let refs: Vec<&str> = items.iter().map(String::as_str).collect();
                scaffold::POSTGRES_MAJORS[printer.select("PostgreSQL version", &refs, 0)?]
            }
        };
        c.python_version = match &self.python {
            Some(v) => v.clone(),
            None => {
                let default = scaffold::PYTHON_VERSIONS
                    .iter()
                    .position(|v| *v == scaffold::DEFAULT_PYTHON)
                    .unwrap_or(0);
                scaffold::PYTHON_VERSIONS
                    [printer.select("Python version", scaffold::PYTHON_VERSIONS, default)?]
                .to_string()
            }
        };
        c.postgis = if self.postgis {
            true
        } else if self.no_postgis || self.db_image.is_some() {
            false
        } else {
            printer.confirm("Use PostGIS?", false)?
        };
        c.port = match self.port {
            Some(p) => p,
            None => printer
                .input(
                    "Port to publish nginx on",
                    &scaffold::DEFAULT_PORT.to_string(),
                    |s| {
                        s.parse::<u16>()
                            .ok()
                            .filter(|p| *p > 0)
                            .map(|_| ())
                            .ok_or_else(|| "a port between 1 and 65535".to_string())
                    },
                )?
                .parse()?,
        };
        c.db_image = self.db_image.clone();
        c.python_image = self.python_image.clone();
        c.nginx_image = self.nginx_image.clone();
        Ok(c)
    }
}
