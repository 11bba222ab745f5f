//! One psql kept open in the db container for the many small statements of a restore
//! (claims, checks, counts, the swap): a request through its stdin costs about a
//! millisecond, where a `docker exec` of a new psql costs 50–90 ms on a laptop's
//! engine, and a restore makes a few dozen of them.
//!
//! The session stays connected to `postgres`; a request in another database connects
//! there and back (`\connect`), so the session is never one of the sessions a swap or a
//! `DROP DATABASE … WITH (FORCE)` ends. psql runs with `ON_ERROR_STOP`: a failing
//! statement ends it, as it ended the one-off psql, and the next request opens a new
//! session. A request cut off half-way (Ctrl-C) leaves its answer unread: the session
//! is then thrown away rather than read out of step.

use crate::engine::{Engine, ExecSession};

/// An open psql and where its requests stand.
pub struct Session {
    exec: ExecSession,
    /// True from a request's start to the end of its answer.
    busy: bool,
    serial: u64,
}

/// `\connect` to `database`, quoted as psql's meta-commands read arguments.
fn connect(database: &str) -> String {
    format!(
        "\\connect '{}'\n",
        database.replace('\\', "\\\\").replace('\'', "''")
    )
}

/// The text of one request: its statements (ended, so psql sends the last one too),
/// in `database`, then back to `postgres`, then the line that ends the answer.
fn request(database: &str, sql: &str, end: &str) -> String {
    let mut text = String::new();
    let elsewhere = database != "postgres";
    if elsewhere {
        text.push_str(&connect(database));
    }
    text.push_str(sql.trim_end());
    if !sql.trim_end().ends_with(';') {
        // On a line of its own: the last line may be a `--` comment.
        text.push_str("\n;");
    }
    text.push('\n');
    if elsewhere {
        text.push_str(&connect("postgres"));
    }
    text.push_str(&format!("\\echo {end}\n"));
    text
}

impl Session {
    pub async fn open(engine: &Engine, container: &str, args: &[&str]) -> anyhow::Result<Self> {
        let exec = engine
            .exec_session(container, args, &["PGAPPNAME=countable".to_string()])
            .await?;
        Ok(Self {
            exec,
            busy: false,
            serial: 0,
        })
    }

    /// Was a request cut off half-way (its answer unread)?
    pub fn spoiled(&self) -> bool {
        self.busy
    }

    /// Run `sql` in `database`; its output (unaligned, tuples only), at most `max`
    /// bytes. `Err(Failed)` when psql stopped (the statement failed): the session is
    /// then over.
    pub async fn run(&mut self, database: &str, sql: &str, max: usize) -> Result<String, Failed> {
        self.busy = true;
        self.serial += 1;
        let end = format!("__countable_end_{}_{}__", std::process::id(), self.serial);
        self.exec.clear_stderr();
        if let Err(e) = self
            .exec
            .send(request(database, sql, &end).as_bytes())
            .await
        {
            return Err(Failed::Transport(e.into()));
        }
        let mut out = String::new();
        loop {
            match self.exec.read_line(max).await {
                Ok(Some(line)) if line == end => break,
                Ok(Some(line)) => {
                    if out.len() + line.len() >= max {
                        return Err(Failed::TooLong);
                    }
                    out.push_str(&line);
                    out.push('\n');
                }
                // psql ended before the answer did: a statement failed.
                Ok(None) => return Err(Failed::Stopped(self.exec.stderr())),
                Err(e) => return Err(Failed::Transport(e.into())),
            }
        }
        self.busy = false;
        Ok(out)
    }
}

/// How a request failed.
#[derive(Debug)]
pub enum Failed {
    /// psql stopped, with this on stderr.
    Stopped(String),
    /// More output than the caller reads.
    TooLong,
    /// The engine's connection failed.
    Transport(anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_ends_its_statement_and_comes_back_to_postgres() {
        let r = request("shop__countable_new", "SELECT 1", "END");
        assert_eq!(
            r,
            "\\connect 'shop__countable_new'\nSELECT 1\n;\n\\connect 'postgres'\n\\echo END\n"
        );
        let r = request("postgres", "ALTER SYSTEM RESET fsync;\nSELECT 2;\n", "END");
        assert_eq!(r, "ALTER SYSTEM RESET fsync;\nSELECT 2;\n\\echo END\n");
    }

    #[test]
    fn database_names_are_quoted_for_psql() {
        assert_eq!(connect("o'brien\\x"), "\\connect 'o''brien\\\\x'\n");
    }
}
