//! The facts a deploy needs from git: the commit being deployed, whether the working
//! tree is clean, whether a commit is on a branch, who is deploying, and a checkout of
//! another ref to build from. It reads; the only thing it writes is a temporary
//! worktree, removed when dropped.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::Hint;
use crate::process;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{dir} is not inside a git repository")]
    NotARepo { dir: String },
    #[error("`{0}` is not a commit, branch or tag here")]
    UnknownRef(String),
    #[error("`git {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
}

impl Hint for GitError {
    fn hint(&self) -> Option<String> {
        match self {
            GitError::NotARepo { .. } => Some("deploy from a git checkout of the project (`git init && git add -A && git commit -m first`)".into()),
            GitError::UnknownRef(r) => Some(format!("fetch it first (`git fetch origin {r}`) or name a commit that exists (`git log --oneline`)")),
            GitError::Failed { .. } => Some("run the same git command yourself to see what is wrong".into()),
        }
    }
}
crate::register_hint!(GitError);

/// One repository, by its working directory.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
}

impl Repo {
    /// The repository holding `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let repo = Self {
            dir: dir.to_path_buf(),
        };
        match repo.git(&["rev-parse", "--git-dir"]) {
            Ok(_) => Ok(repo),
            Err(_) => Err(GitError::NotARepo {
                dir: dir.display().to_string(),
            }
            .into()),
        }
    }

    fn git(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = process::command("git")
            .args(args)
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::null())
            .output()
            .context("starting git (is it installed?)")?;
        if !out.status.success() {
            return Err(GitError::Failed {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The full sha of `reference` (default HEAD).
    pub fn sha(&self, reference: &str) -> anyhow::Result<String> {
        self.git(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{reference}^{{commit}}"),
        ])
        .map_err(|_| GitError::UnknownRef(reference.to_string()).into())
    }

    /// Changed or untracked files (not ignored ones): what would make the image differ
    /// from the commit.
    pub fn dirty_files(&self) -> anyhow::Result<Vec<String>> {
        let out = self.git(&["status", "--porcelain", "--untracked-files=normal"])?;
        Ok(out
            .lines()
            .filter(|l| l.len() > 3)
            .map(|l| l[3..].to_string())
            .collect())
    }

    /// Is `sha` on `branch` (the local branch or origin's), or is this Jenkins building
    /// that branch (`BRANCH_NAME`, a multibranch job's detached checkout)?
    pub fn on_branch(&self, sha: &str, branch: &str) -> bool {
        if std::env::var("BRANCH_NAME").is_ok_and(|b| b == branch)
            && self.sha("HEAD").is_ok_and(|h| h == sha)
        {
            return true;
        }
        [
            format!("refs/heads/{branch}"),
            format!("refs/remotes/origin/{branch}"),
        ]
        .iter()
        .any(|r| self.git(&["merge-base", "--is-ancestor", sha, r]).is_ok())
    }

    /// The name of the branch checked out, or `BRANCH_NAME` under Jenkins.
    pub fn current_ref(&self) -> String {
        if let Ok(b) = std::env::var("BRANCH_NAME") {
            return b;
        }
        self.git(&["rev-parse", "--abbrev-ref", "HEAD"])
            .unwrap_or_else(|_| "HEAD".into())
    }

    /// Who is deploying: git's user.name, else the login.
    pub fn user(&self) -> String {
        self.git(&["config", "user.name"])
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into())
    }

    /// A detached checkout of `sha` in a temporary directory, to build another ref
    /// than the working tree's.
    pub fn checkout(&self, sha: &str) -> anyhow::Result<Checkout> {
        let tmp = tempfile::Builder::new()
            .prefix("countable-ref-")
            .tempdir()?;
        let path = tmp.path().join("tree");
        self.git(&[
            "worktree",
            "add",
            "--detach",
            &path.display().to_string(),
            sha,
        ])?;
        Ok(Checkout {
            repo: self.clone(),
            path,
            _tmp: tmp,
        })
    }
}

/// A temporary worktree; removed (with git's record of it) when dropped.
pub struct Checkout {
    repo: Repo,
    pub path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = self.repo.git(&[
            "worktree",
            "remove",
            "--force",
            &self.path.display().to_string(),
        ]);
    }
}
