//! Test hosts: each a second Docker engine with its own sshd in a network namespace of its
//! own, reached from the machine as `ssh://root@10.231.0.(10+N)`, made and removed by the
//! `tests/hosts` script (GUIDE section 5b). Needs root, as CI has.
//!
//! It never touches the machine's `~/.ssh`: the engines are reached through an `ssh`
//! wrapper with the rig's own key and config, put first on PATH (`path_env`), which is
//! what the docker CLI and countable's ssh transport both spawn.
//!
//! A host is taken down when its `TestHost` is dropped, or (the safety net for a test
//! binary that is killed or aborts) by the script's watcher once this process has ended.
//! Several tests of one binary share a host through `TestHost::shared`.

use super::{run, Run};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The rig's script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hosts")
}

/// Panic with the reason when the rig cannot run here.
pub fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("run id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the test hosts (tests/hosts: network namespaces, a second dockerd, sshd) need root; \
         run the tests as root, as CI does"
    );
}

/// `tests/hosts ARGS...`, panicking with its output when it fails; its `KEY=value` lines.
fn rig(args: &[&str]) -> HashMap<String, String> {
    require_root();
    let r = run(Command::new(script()).args(args));
    assert_eq!(
        r.code,
        0,
        "tests/hosts {} failed\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        r.stdout,
        r.stderr
    );
    r.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field(vars: &HashMap<String, String>, key: &str) -> String {
    vars.get(key)
        .unwrap_or_else(|| panic!("tests/hosts printed no {key}= line: {vars:?}"))
        .clone()
}

/// One test host (see the module doc).
#[derive(Debug)]
pub struct TestHost {
    name: String,
    n: u8,
    addr: String,
    sock: PathBuf,
    ssh_path: PathBuf,
    namespace: String,
    /// This value started the host, so dropping it takes the host down.
    owned: bool,
}

impl TestHost {
    /// Start test host `n` (1..19, address 10.231.0.(10+n)) named `name`, with `load`
    /// copied from the machine's engine. Idempotent: a host already up is reused (and then
    /// left up on drop, for whoever started it).
    pub fn start(name: &str, n: u8, load: &[&str]) -> TestHost {
        let pid = std::process::id().to_string();
        let n_arg = n.to_string();
        let mut args = vec!["up", name, &n_arg, "--owner", &pid];
        for image in load {
            args.extend(["--load", image]);
        }
        let vars = rig(&args);
        TestHost {
            name: name.to_string(),
            n,
            addr: field(&vars, "ADDR"),
            sock: PathBuf::from(field(&vars, "SOCK")),
            ssh_path: PathBuf::from(field(&vars, "SSH_PATH")),
            namespace: field(&vars, "NS"),
            owned: field(&vars, "OWNED") == "yes",
        }
    }

    /// The host `name`/`n` shared by all tests of this binary: started by the first
    /// caller (later callers' `load` is loaded too), taken down when the binary ends.
    pub fn shared(name: &str, n: u8, load: &[&str]) -> &'static TestHost {
        static HOSTS: OnceLock<Mutex<HashMap<(String, u8), &'static TestHost>>> = OnceLock::new();
        let mut hosts = HOSTS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), n);
        if let Some(host) = hosts.get(&key) {
            host.load(load);
            return host;
        }
        let mut host = TestHost::start(name, n, load);
        // Statics are never dropped: the script's watcher takes it down after the binary.
        host.owned = false;
        let host: &'static TestHost = Box::leak(Box::new(host));
        hosts.insert(key, host);
        host
    }

    /// Copy more images from the machine's engine (those already there are skipped).
    pub fn load(&self, images: &[&str]) {
        if images.is_empty() {
            return;
        }
        let n_arg = self.n.to_string();
        let mut args = vec!["up", &self.name, &n_arg];
        for image in images {
            args.extend(["--load", image]);
        }
        rig(&args);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the test bridge (10.231.0.(10+n)).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `ssh://root@ADDR`: the engine as countable's `docker_host` names it.
    pub fn docker_host(&self) -> String {
        format!("ssh://root@{}", self.addr)
    }

    /// The engine's unix socket on the machine (for checks that should not go over ssh).
    pub fn sock(&self) -> &Path {
        &self.sock
    }

    /// The network namespace the host lives in (`nsenter --net=/var/run/netns/NS`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// PATH with the rig's `ssh` first: set it on any command that reaches `docker_host()`.
    pub fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.ssh_path.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The docker CLI against this host's engine, through its socket.
    pub fn docker(&self, args: &[&str]) -> Run {
        run(Command::new("docker")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .args(args))
    }

    /// The docker CLI against this host's engine over ssh://, as a user's would reach it.
    pub fn docker_over_ssh(&self, args: &[&str]) -> Run {
        run(Command::new("docker")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_HOST", self.docker_host())
            .env("PATH", self.path_env())
            .args(args))
    }

    /// Stop the host's engine (a node loss); the rest goes on drop.
    pub fn stop_engine(&self) {
        rig(&["stop-engine", &self.name]);
    }

    /// Take the host down now (what drop does for a host this value started).
    pub fn down(mut self) {
        self.owned = false;
        rig(&["down", &self.name]);
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if self.owned {
            let r = run(Command::new(script()).args(["down", &self.name]));
            if r.code != 0 && !std::thread::panicking() {
                panic!("tests/hosts down {} failed: {}", self.name, r.stderr);
            }
        }
    }
}

/// The test registry: `localhost:5000` on the machine and on every test host's engine
/// (Debian's docker-registry on the bridge address, forwarded to loopback everywhere).
#[derive(Debug)]
pub struct TestRegistry {
    owned: bool,
}

impl TestRegistry {
    pub const ADDR: &'static str = "localhost:5000";

    /// Start the registry (or reuse the one that runs); stopped on drop if started here.
    pub fn start() -> TestRegistry {
        let pid = std::process::id().to_string();
        let vars = rig(&["registry", "up", "--owner", &pid]);
        TestRegistry {
            owned: field(&vars, "OWNED") == "yes",
        }
    }

    /// `localhost:5000/<name>`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", Self::ADDR)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if self.owned {
            let _ = run(Command::new(script()).args(["registry", "down"]));
        }
    }
}
