//! The multi-host rig of the deploy tests (tests/hosts, tests/common/hosts.rs): a test host
//! is another engine, reached over ssh:// by the docker CLI and by countable, serving
//! its own containers at its own address; hosts reach each other; the registry serves
//! every engine; and taking the hosts down leaves the machine as it was.
//! Needs root (CI runs as root). The tests take turns: the last one checks the machine.
#![allow(clippy::disallowed_methods)] // the tests run docker and the rig's script

mod common;

use common::hosts::{TestHost, TestRegistry};
use common::{http_get_at, run, Run, Scratch, NGINX_IMAGE};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

static SERIAL: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn machine_docker(args: &[&str]) -> Run {
    run(Command::new("docker").args(args))
}

fn info(r: Run) -> serde_json::Value {
    serde_json::from_str(&r.ok().stdout).expect("docker info --format json is JSON")
}

/// An nginx on `host` publishing `port`, answering every request with `text`.
fn web(host: &TestHost, name: &str, port: u16, text: &str) {
    let conf = format!("server {{ listen 80; location / {{ return 200 '{text}\\n'; }} }}");
    host.docker(&[
        "run",
        "--detach",
        "--name",
        name,
        "--publish",
        &format!("{port}:80"),
        NGINX_IMAGE,
        "sh",
        "-c",
        "printf '%s\\n' \"$0\" >/etc/nginx/conf.d/t.conf && exec nginx -g 'daemon off;'",
        &conf,
    ])
    .ok();
}

/// GET http://addr:port/ from the machine, retried while nginx starts.
fn get_text(addr: &str, port: u16) -> String {
    for _ in 0..50 {
        if std::net::TcpStream::connect((addr, port)).is_ok() {
            let r = http_get_at(addr, port, "/", &[]);
            if r.status == 200 {
                return r.body;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("nothing answers HTTP at {addr}:{port}");
}

/// GET `url` from a container on `host` (python's urllib; the stand-ins have no curl).
fn get_from_container(host: &TestHost, url: &str) -> Run {
    host.docker(&[
        "run",
        "--rm",
        NGINX_IMAGE,
        "python3",
        "-c",
        "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode(), end='')",
        url,
    ])
}

#[test]
fn a_test_host_is_another_engine_reached_over_ssh() {
    let _turn = turn();
    let t = Instant::now();
    let host = TestHost::start("rig1", 1, &[NGINX_IMAGE]);
    eprintln!("rig: host up with nginx loaded in {:?}", t.elapsed());
    assert_eq!(host.docker_host(), "ssh://root@10.231.0.11");

    let machine = info(machine_docker(&["info", "--format", "{{json .}}"]));
    let remote = info(host.docker_over_ssh(&["info", "--format", "{{json .}}"]));
    assert_ne!(
        remote["ID"], machine["ID"],
        "the same engine ID over ssh://"
    );
    assert_ne!(remote["Name"], machine["Name"]);
    assert_ne!(remote["DockerRootDir"], machine["DockerRootDir"]);
    let images = host
        .docker_over_ssh(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok()
        .stdout;
    assert_eq!(
        images.trim(),
        format!("{NGINX_IMAGE}:latest"),
        "only what was loaded"
    );

    // A container started over ssh:// runs there, not here, and answers at the host's address.
    host.docker_over_ssh(&[
        "run",
        "--detach",
        "--name",
        "rig-web",
        "--publish",
        "80:80",
        NGINX_IMAGE,
        "sh",
        "-c",
        "echo 'server { listen 80; location / { return 200 \"on rig1\\n\"; } }' >/etc/nginx/conf.d/t.conf && exec nginx -g 'daemon off;'",
    ])
    .ok();
    assert_eq!(get_text(host.addr(), 80), "on rig1\n");
    let here = machine_docker(&["ps", "--all", "--quiet", "--filter", "name=^rig-web$"]).ok();
    assert_eq!(
        here.stdout.trim(),
        "",
        "the container is on the machine's engine"
    );
    // Starting again reuses the running host (and the image already there).
    let t = Instant::now();
    let again = TestHost::start("rig1", 1, &[NGINX_IMAGE]);
    assert!(
        t.elapsed().as_secs() < 5,
        "a second start took {:?}",
        t.elapsed()
    );
    assert_eq!(again.addr(), host.addr());
    drop(again);
    assert_eq!(
        get_text(host.addr(), 80),
        "on rig1\n",
        "dropping a reused host stopped it"
    );
    let t = Instant::now();
    drop(host);
    eprintln!("rig: host down in {:?}", t.elapsed());
}

#[test]
fn countable_reaches_a_test_host_over_ssh() {
    let _turn = turn();
    let host = TestHost::start("rig1", 1, &[]);
    let s = Scratch::new("rigssh");
    s.set_environments(&format!(
        "environments:\n  prod:\n    backups: backups/\n    docker_host: {}\n",
        host.docker_host()
    ));
    // The host runs no db for the project: countable says so, which it can only know by
    // asking that engine (an unreachable one fails differently, as the second run shows).
    let reached = run(s
        .countable()
        .args(["backup", "prod"])
        .env("PATH", host.path_env()))
    .fails();
    assert!(
        reached.stderr.contains(&format!(
            "no running `db` container on {}",
            host.docker_host()
        )),
        "{}",
        reached.stderr
    );
    let unreached = run(s.countable().args(["backup", "prod"])).fails();
    assert!(
        unreached.stderr.contains("cannot reach"),
        "without the rig's ssh on PATH: {}",
        unreached.stderr
    );
}

#[test]
fn two_hosts_reach_each_other_and_down_leaves_nothing() {
    let _turn = turn();
    let before = machine_state();
    let t = Instant::now();
    let one = TestHost::start("rig1", 1, &[NGINX_IMAGE, common::DB_IMAGE]);
    eprintln!(
        "rig: host up with nginx and postgres loaded in {:?}",
        t.elapsed()
    );
    let two = TestHost::start("rig2", 2, &[NGINX_IMAGE]);
    assert_ne!(one.addr(), two.addr());
    web(&one, "rig-a", 8081, "on rig1");
    web(&two, "rig-b", 8082, "on rig2");
    assert_eq!(get_text(one.addr(), 8081), "on rig1\n");
    assert_eq!(get_text(two.addr(), 8082), "on rig2\n");
    let r = get_from_container(&one, &format!("http://{}:8082/", two.addr())).ok();
    assert_eq!(r.stdout, "on rig2\n");
    let r = get_from_container(&two, &format!("http://{}:8081/", one.addr())).ok();
    assert_eq!(r.stdout, "on rig1\n");
    // Nothing past the bridge: the outside is refused from a host at once.
    let r = get_from_container(&one, "http://192.0.2.1/");
    assert_ne!(r.code, 0, "a host reached the outside: {}", r.stdout);

    let during = machine_state();
    assert_ne!(during, before, "the rig changed nothing that is checked");
    for piece in [
        "countable-h1",
        "ctbr0",
        "ctv2",
        "-i ctbr0 -j ACCEPT",
        "/rig2/data",
    ] {
        assert!(during.contains(piece), "no {piece} in:\n{during}");
    }
    let t = Instant::now();
    drop(one);
    drop(two);
    eprintln!("rig: two hosts down in {:?}", t.elapsed());
    assert_eq!(machine_state(), before, "the machine is not as it was");
}

#[test]
fn an_image_pushed_to_the_registry_is_pulled_by_a_host() {
    let _turn = turn();
    let host = TestHost::start("rig1", 1, &[]);
    let registry = TestRegistry::start();
    let image = registry.image("rig-pushed");
    machine_docker(&["tag", NGINX_IMAGE, &image]).ok();
    let t = Instant::now();
    let pushed = machine_docker(&["push", "--quiet", &image]);
    machine_docker(&["rmi", &image]).ok();
    pushed.ok();
    eprintln!(
        "rig: pushed a stand-in to the registry in {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    host.docker_over_ssh(&["pull", "--quiet", &image]).ok();
    eprintln!("rig: the host pulled it in {:?}", t.elapsed());
    let r = host.docker(&["run", "--rm", &image, "nginx", "-v"]).ok();
    assert!(r.stderr.contains("nginx version"), "{}", r.stderr);
}

/// What the rig may change on the machine, as text to compare. (Only what is the rig's:
/// other tests on this machine start containers, veths and fuse-overlayfs mounts too.)
fn machine_state() -> String {
    let sh = |cmd: &str| {
        let r = run(Command::new("sh").args(["-c", cmd]));
        format!("$ {cmd}\n{}{}", r.stdout, r.stderr)
    };
    [
        sh("ip netns list"),
        sh("ip -o link show | awk '{print $2}' | grep '^ct'"),
        sh("iptables -S DOCKER-USER 2>/dev/null"),
        sh("mount | grep countable-hosts"),
        sh("grep -c countable-hosts /proc/self/mountinfo"),
        sh("pgrep -c -x dockerd"),
        sh("pgrep -a -x dockerd | grep -c countable-hosts"),
        sh("pgrep -a -x sshd | grep -c countable-hosts"),
        sh("pgrep -a -x fuse-overlayfs | grep -c countable-hosts"),
        sh("pgrep -a -x socat | grep -c 10.231.0"),
        sh("pgrep -c -x docker-registry"),
        sh("ls -d /run/netns /tmp/countable-hosts 2>&1"),
    ]
    .join("")
}
