//! File work inside the db container, and the one place where the shell scripts that
//! countable runs there are written: scratch files for a TOC, spools for `--jobs`,
//! extracted directory dumps, the durability marker, free space and `sync`.
//!
//! Every file countable leaves in a container is named `countable-*` under `/tmp` or
//! `$PGDATA`, so one cleanup removes them all. The one SQL here reads a file of the
//! data directory (`pg_read_file`, in the session `sql` keeps open).

use anyhow::Context;
use tokio::io::AsyncRead;

use super::db::{literal, Db};
use super::RestoreError;
use crate::engine::StreamedExec;
use crate::ui;

/// Scratch names of one restore, unique per countable process.
pub struct Scratch {
    pub head: String,
    pub list: String,
    /// Relative to `$PGDATA` (the volume), where spools and directory dumps go.
    pub spool: String,
    pub dir: String,
}

impl Scratch {
    pub fn new() -> Self {
        let id = std::process::id();
        Self {
            head: format!("/tmp/countable-{id}.head"),
            list: format!("/tmp/countable-{id}.list"),
            spool: format!("countable-spool-{id}.dump"),
            dir: format!("countable-dir-{id}"),
        }
    }
}

/// `$PGDATA/countable-durability`: written before the server is made non-durable and
/// removed once it is durable again (see `durability`).
pub const MARKER: &str = "countable-durability";

const CLEANUP: &str =
    "rm -rf /tmp/countable-* \"$PGDATA\"/countable-spool-* \"$PGDATA\"/countable-dir-*";

fn sh<'a>(script: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut cmd = vec!["sh", "-c", script, "sh"];
    cmd.extend_from_slice(args);
    cmd
}

async fn run<R>(
    db: &Db,
    script: &str,
    args: &[&str],
    stdin: Option<R>,
) -> anyhow::Result<StreamedExec>
where
    R: AsyncRead + Unpin + Send,
{
    db.exec(&sh(script, args), stdin).await
}

fn failed(what: &str, run: &StreamedExec) -> anyhow::Error {
    anyhow::anyhow!("{what} in the db container failed: {}", run.stderr.trim())
}

/// Write `contents` to `path` (absolute, or relative to `$PGDATA`).
pub async fn write_file(db: &Db, path: &str, contents: Vec<u8>) -> anyhow::Result<()> {
    let wrote = run(
        db,
        "case \"$1\" in /*) f=\"$1\";; *) f=\"$PGDATA/$1\";; esac; cat > \"$f\"",
        &[path],
        Some(std::io::Cursor::new(contents)),
    )
    .await?;
    if wrote.code != 0 {
        return Err(failed("writing a file", &wrote));
    }
    Ok(())
}

/// The contents of `$PGDATA/<name>`, if it exists: read by the server, through the
/// SQL session, where a `cat` would cost a `docker exec`.
pub async fn read_data_file(db: &Db, name: &str) -> anyhow::Result<Option<String>> {
    let path = format!("{}/{name}", db.pgdata);
    let out = db
        .sql(
            "postgres",
            &format!(
                "SELECT coalesce('+' || pg_read_file({}, 0, 1048576, true), '-')",
                literal(&path)
            ),
        )
        .await
        .context("reading a file in the db container")?;
    Ok(out
        .strip_prefix('+')
        .map(|text| text.trim_end_matches('\n').to_string()))
}

/// Remove `$PGDATA/<name>` (missing is fine).
pub async fn remove_data_file(db: &Db, name: &str) -> anyhow::Result<()> {
    let out = run(
        db,
        "rm -f \"$PGDATA/$1\"",
        &[name],
        None::<tokio::io::Empty>,
    )
    .await?;
    if out.code != 0 {
        return Err(failed("removing a file", &out));
    }
    Ok(())
}

/// Write the first bytes of an archive (`head`, already limited) to `path` and list
/// its table of contents there (`pg_restore -l`, on stdout, at most `cap` bytes kept):
/// one exec for both. A failing write is an error here; a failing listing is the
/// caller's to judge (its code and stderr).
pub async fn spool_head_and_list<R>(
    db: &Db,
    path: &str,
    head: R,
    cap: usize,
) -> anyhow::Result<StreamedExec>
where
    R: AsyncRead + Unpin + Send,
{
    let spooled = db
        .exec_capped(
            &sh("cat > \"$1\" || exit 90; pg_restore -l \"$1\"", &[path]),
            Some(head),
            cap,
        )
        .await?;
    if spooled.code == 90 {
        return Err(failed("writing the archive's start", &spooled));
    }
    Ok(spooled)
}

/// `$PGDATA/<spool>` = the file `head` followed by stdin (the rest of the archive).
pub async fn spool_archive<R>(
    db: &Db,
    head: &str,
    spool: &str,
    rest: R,
) -> anyhow::Result<StreamedExec>
where
    R: AsyncRead + Unpin + Send,
{
    let spooled = run(
        db,
        "cat \"$1\" - > \"$PGDATA/$2\"",
        &[head, spool],
        Some(rest),
    )
    .await?;
    if spooled.code != 0 && spooled.fed.is_ok() {
        return Err(failed("spooling the archive", &spooled));
    }
    Ok(spooled)
}

/// `pg_restore -j JOBS ARGS… $PGDATA/<spool>`, removing the spool afterwards.
pub async fn pg_restore_spooled(
    db: &Db,
    spool: &str,
    jobs: u32,
    args: &[&str],
) -> anyhow::Result<StreamedExec> {
    let jobs = jobs.to_string();
    let mut a = vec![spool, jobs.as_str()];
    a.extend_from_slice(args);
    run(
        db,
        "f=\"$PGDATA/$1\"; shift; pg_restore -j \"$@\" \"$f\"; rc=$?; rm -f \"$f\"; exit $rc",
        &a,
        None::<tokio::io::Empty>,
    )
    .await
}

/// `pg_restore ARGS…` reading the file `head` and then stdin (the rest of the archive);
/// `head` and `list` (the `-L` file in ARGS) are removed when it ends.
pub async fn pg_restore_streamed<R>(
    db: &Db,
    head: &str,
    list: &str,
    args: &[&str],
    rest: R,
) -> anyhow::Result<StreamedExec>
where
    R: AsyncRead + Unpin + Send,
{
    let mut a = vec![head, list];
    a.extend_from_slice(args);
    run(
        db,
        "h=\"$1\"; l=\"$2\"; shift 2; cat \"$h\" - | pg_restore \"$@\"; rc=$?; rm -f \"$h\" \"$l\"; exit $rc",
        &a,
        Some(rest),
    )
    .await
}

/// Extract a tar (stdin) into `$PGDATA/<dir>`; the path of the directory holding its
/// `toc.dat` is printed on stdout.
pub async fn extract_directory<R>(db: &Db, dir: &str, tar: R) -> anyhow::Result<StreamedExec>
where
    R: AsyncRead + Unpin + Send,
{
    run(
        db,
        "d=\"$PGDATA/$1\"; rm -rf \"$d\"; mkdir -p \"$d\" && tar -x -C \"$d\" && dirname \"$(find \"$d\" -name toc.dat | head -n 1)\"",
        &[dir],
        Some(tar),
    )
    .await
}

/// The first `n` bytes of the file at `path`.
pub async fn head_bytes(db: &Db, path: &str, n: usize) -> anyhow::Result<String> {
    let n = n.to_string();
    Ok(db
        .exec(&["head", "-c", &n, path], None::<tokio::io::Empty>)
        .await?
        .stdout)
}

/// Remove the given scratch files (absolute, or relative to `$PGDATA`).
pub async fn remove(db: &Db, paths: &[&str]) {
    let _ = run(
        db,
        "for p in \"$@\"; do case \"$p\" in /*) rm -rf \"$p\";; *) rm -rf \"$PGDATA/$p\";; esac; done",
        paths,
        None::<tokio::io::Empty>,
    )
    .await;
}

/// Remove every scratch file any countable restore left in the container.
pub async fn remove_all_scratch(db: &Db) {
    let _ = run(db, CLEANUP, &[], None::<tokio::io::Empty>).await;
}

/// Flush every file system of the container to disk (`sync`).
pub async fn sync(db: &Db) -> anyhow::Result<()> {
    let out = run(db, "sync", &[], None::<tokio::io::Empty>).await?;
    if out.code != 0 {
        return Err(failed("sync", &out));
    }
    Ok(())
}

/// Free bytes in the file system holding `$PGDATA`. A `df` whose output cannot be read
/// is an error: a space check that cannot measure must not pass.
pub async fn free_bytes(db: &Db) -> anyhow::Result<u64> {
    let out = run(db, "df -Pk \"$PGDATA\"", &[], None::<tokio::io::Empty>).await?;
    parse_df(&out.stdout).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot read the free space of the db container's volume: `df -Pk` said {:?}",
            out.stdout.trim()
        )
    })
}

/// `df -P` output: the 4th field of the 2nd line, in KiB.
fn parse_df(text: &str) -> Option<u64> {
    let line = text.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Space kept free beside a spool, so the server itself never runs out.
pub const SPOOL_MARGIN: u64 = 256 * 1024 * 1024;

/// Refuse a spool of `need` bytes when the volume has less free (beyond the margin).
pub fn check_space(need: u64, free: u64) -> Result<(), RestoreError> {
    if need.saturating_add(SPOOL_MARGIN) > free {
        return Err(RestoreError::SpoolSpace {
            need: ui::human_bytes(need.saturating_add(SPOOL_MARGIN)),
            have: ui::human_bytes(free),
        });
    }
    Ok(())
}

/// A reader that fails (with `SpoolSpace`) once more than `limit` bytes went through:
/// a decoded stream whose size nobody knew is checked while it is spooled.
pub struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
    free: u64,
    over: bool,
}

impl<R> Bounded<R> {
    pub fn new(inner: R, free: u64) -> Self {
        let limit = free.saturating_sub(SPOOL_MARGIN);
        Self {
            inner,
            left: limit,
            limit,
            free,
            over: false,
        }
    }
}

/// The error `Bounded` raises, found again in the chain by the caller.
#[derive(Debug, thiserror::Error)]
#[error("the spool would grow beyond the free space ({limit} bytes of {free})")]
pub struct SpoolFull {
    pub limit: u64,
    pub free: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Bounded<R> {
    /// Bytes past the limit fail the read after the one that crossed it (a read that
    /// returned bytes cannot also fail): at most one buffer goes past the limit, well
    /// inside the margin.
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.over {
            return std::task::Poll::Ready(Err(std::io::Error::other(SpoolFull {
                limit: this.limit,
                free: this.free,
            })));
        }
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &poll {
            let n = (buf.filled().len() - before) as u64;
            match this.left.checked_sub(n) {
                Some(left) => this.left = left,
                None => this.over = true,
            }
        }
        poll
    }
}

/// Did feeding a spool stop because `Bounded` ran out of room?
pub fn spool_full(e: &std::io::Error) -> Option<RestoreError> {
    let full = e.get_ref()?.downcast_ref::<SpoolFull>()?;
    Some(RestoreError::SpoolSpace {
        need: format!("more than {}", ui::human_bytes(full.limit + SPOOL_MARGIN)),
        have: ui::human_bytes(full.free),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn df_is_parsed_or_refused() {
        let ok = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 263174212 12000000 83886080 13% /var/lib/postgresql/data\n";
        assert_eq!(parse_df(ok), Some(83886080 * 1024));
        assert_eq!(parse_df(""), None);
        assert_eq!(parse_df("Filesystem\n/dev/vda x y z"), None);
        assert_eq!(parse_df("sh: df: not found\n"), None);
    }

    #[test]
    fn space_check_keeps_a_margin() {
        assert!(check_space(1 << 30, (1 << 30) + SPOOL_MARGIN).is_ok());
        assert!(check_space(1 << 30, 1 << 30).is_err());
        assert!(check_space(u64::MAX - 1, u64::MAX - 1).is_err());
    }

    #[tokio::test]
    async fn bounded_reader_stops_at_the_limit() {
        let data = vec![7u8; 1000];
        let mut r = Bounded::new(&data[..], SPOOL_MARGIN + 999);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).await.unwrap_err();
        assert!(spool_full(&e).is_some(), "{e}");
        let mut r = Bounded::new(&data[..], SPOOL_MARGIN + 1000);
        out.clear();
        assert_eq!(r.read_to_end(&mut out).await.unwrap(), 1000);
    }
}
