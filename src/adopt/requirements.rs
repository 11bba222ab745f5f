//! The Python packages a project depends on, as `init` must judge them: every
//! requirements file reached from `requirements.txt` through `-r`/`-c` includes (pip's
//! own syntax, relative to the including file), and `pyproject.toml`'s dependencies
//! (PEP 621 `[project]`, and Poetry's table).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What was read: the normalised package names, and the files they came from.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Requirements {
    pub names: BTreeSet<String>,
    /// Every file read, in the order read (relative to the project root when inside it).
    pub files: Vec<PathBuf>,
    /// Includes that name a file that cannot be read: `(including file, named path)`.
    pub missing: Vec<(PathBuf, String)>,
}

impl Requirements {
    /// Does the project depend on one of `packages` (names compared as pip normalises
    /// them; extras such as `psycopg[binary]` do not matter)?
    pub fn has_any(&self, packages: &[&str]) -> bool {
        packages.iter().any(|p| self.names.contains(&normalise(p)))
    }
}

/// PEP 503 normalisation: lower case, runs of `-_.` as one `-`.
pub fn normalise(name: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            dash = true;
        } else {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The package name at the start of a requirement specifier (`Django>=4.2,<5`,
/// `psycopg[binary]==3.2`, `foo @ https://…`, `bar ; python_version < "3.12"`); None for
/// a URL, a path or an editable install, whose name pip learns only by building it.
fn specifier_name(spec: &str) -> Option<String> {
    let spec = spec.trim();
    let end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(spec.len());
    let name = &spec[..end];
    if name.is_empty() || name.starts_with('.') || spec[end..].starts_with([':', '+', '/']) {
        return None;
    }
    Some(normalise(name))
}

/// The included path of an option line (`-r x`, `--requirement=x`, `-cx`), if it is one.
fn include(line: &str) -> Option<&str> {
    for opt in ["--requirement", "--constraint", "-r", "-c"] {
        if let Some(rest) = line.strip_prefix(opt) {
            let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
            if !rest.is_empty() && (opt.len() == 2 || line.len() > opt.len()) {
                return Some(rest);
            }
        }
    }
    None
}

/// Read `requirements.txt` (and what it includes) and `pyproject.toml` under `root`.
pub fn read(root: &Path) -> Requirements {
    let mut found = Requirements::default();
    let top = root.join("requirements.txt");
    if top.is_file() {
        read_file(root, &top, &mut found, 0);
    }
    let pyproject = root.join("pyproject.toml");
    if let Ok(text) = std::fs::read_to_string(&pyproject) {
        found.files.push(PathBuf::from("pyproject.toml"));
        found.names.extend(pyproject_names(&text));
    }
    found
}

fn read_file(root: &Path, path: &Path, found: &mut Requirements, depth: usize) {
    let shown = path.strip_prefix(root).unwrap_or(path).to_path_buf();
    // pip allows cycles to error out; a visited file is read once.
    if depth > 16 || found.files.contains(&shown) {
        return;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    found.files.push(shown.clone());
    // Continuation lines (a trailing backslash) join the next one.
    let joined = text.replace("\\\n", " ");
    for raw in joined.lines() {
        let line = match raw.find(" #") {
            Some(i) => &raw[..i],
            None => raw,
        }
        .trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rel) = include(line) {
            let next = path.parent().unwrap_or(root).join(rel);
            if next.is_file() {
                read_file(root, &next, found, depth + 1);
            } else {
                found.missing.push((shown.clone(), rel.to_string()));
            }
            continue;
        }
        if line.starts_with('-') {
            continue; // --index-url, -e ., --hash=… and the like
        }
        if let Some(name) = specifier_name(line) {
            found.names.insert(name);
        }
    }
}

/// Dependencies of a pyproject.toml: `[project] dependencies` and its optional groups,
/// `[tool.poetry.dependencies]` (and its groups) — `python` itself excluded.
fn pyproject_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Ok(doc) = text.parse::<toml::Table>() else {
        return names;
    };
    let project = doc.get("project").and_then(|p| p.as_table());
    if let Some(deps) = project
        .and_then(|p| p.get("dependencies"))
        .and_then(|d| d.as_array())
    {
        names.extend(
            deps.iter()
                .filter_map(|d| d.as_str())
                .filter_map(specifier_name),
        );
    }
    if let Some(groups) = project
        .and_then(|p| p.get("optional-dependencies"))
        .and_then(|d| d.as_table())
    {
        for deps in groups.values().filter_map(|g| g.as_array()) {
            names.extend(
                deps.iter()
                    .filter_map(|d| d.as_str())
                    .filter_map(specifier_name),
            );
        }
    }
    let poetry = doc
        .get("tool")
        .and_then(|t| t.get("poetry"))
        .and_then(|p| p.as_table());
    if let Some(poetry) = poetry {
        let mut tables: Vec<&toml::Table> = Vec::new();
        if let Some(t) = poetry.get("dependencies").and_then(|d| d.as_table()) {
            tables.push(t);
        }
        if let Some(groups) = poetry.get("group").and_then(|g| g.as_table()) {
            tables.extend(
                groups
                    .values()
                    .filter_map(|g| g.get("dependencies"))
                    .filter_map(|d| d.as_table()),
            );
        }
        for t in tables {
            names.extend(t.keys().map(|k| normalise(k)).filter(|k| k != "python"));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_includes_relative_to_the_including_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("requirements")).unwrap();
        std::fs::write(
            root.join("requirements.txt"),
            "-r requirements/production.txt\n",
        )
        .unwrap();
        std::fs::write(
            root.join("requirements/production.txt"),
            "-r base.txt\n--constraint=constraints.txt\ngunicorn==23.0  # the server\n-r missing.txt\n",
        )
        .unwrap();
        std::fs::write(
            root.join("requirements/base.txt"),
            "Django>=4.2,<5.1\npsycopg[binary]==3.2.1 \\\n    --hash=sha256:abc\ndj_database_url\n-e .\nhttps://example.org/x.whl\n-r base.txt\n",
        )
        .unwrap();
        std::fs::write(root.join("requirements/constraints.txt"), "wagtail<7\n").unwrap();
        let r = read(root);
        assert_eq!(
            r.names.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "dj-database-url",
                "django",
                "gunicorn",
                "psycopg",
                "wagtail"
            ]
        );
        assert_eq!(
            r.files,
            [
                "requirements.txt",
                "requirements/production.txt",
                "requirements/base.txt",
                "requirements/constraints.txt"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            r.missing,
            vec![(
                PathBuf::from("requirements/production.txt"),
                "missing.txt".to_string()
            )]
        );
        assert!(r.has_any(&["psycopg"]) && r.has_any(&["gunicorn"]) && r.has_any(&["Django"]));
        assert!(!r.has_any(&["uwsgi", "psycopg2"]));
    }

    #[test]
    fn reads_pyproject_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"x\"\ndependencies = [\"Django>=5\", \"psycopg2-binary ; sys_platform != 'win32'\"]\n[project.optional-dependencies]\nprod = [\"gunicorn\"]\n[tool.poetry.dependencies]\npython = \"^3.12\"\nwhitenoise = \"*\"\n[tool.poetry.group.dev.dependencies]\npytest = \"*\"\n",
        )
        .unwrap();
        let r = read(dir.path());
        assert!(r.has_any(&["psycopg", "psycopg2-binary"]), "{r:?}");
        assert!(r.has_any(&["gunicorn"]) && r.has_any(&["whitenoise"]) && r.has_any(&["pytest"]));
        assert!(!r.names.contains("python"));
    }

    #[test]
    fn names_normalise_as_pip_does() {
        assert_eq!(normalise("Dj_Database.URL"), "dj-database-url");
        assert_eq!(specifier_name("foo @ https://x"), Some("foo".into()));
        assert_eq!(specifier_name("./local/pkg"), None);
        assert_eq!(specifier_name("git+https://x"), None);
    }
}
