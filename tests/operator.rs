//! The operator's side of the `fanfare` binary, run as a process: `check-config`, settings
//! from the environment, `token inspect` and the admin right, plain logs when stderr is not a
//! terminal, and `pub`, `sub` and `bench` failing fast, in one line, when no broker answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::Node;

/// How long a test waits for a process to do something before it fails: a bound on a hang.
const WAIT: Duration = Duration::from_secs(15);

fn fanfare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fanfare"))
        .args(args)
        .output()
        .expect("fanfare runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A scratch directory of this test process, under the target dir.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    dir
}

/// A 127.0.0.1 port nothing listens on (bound by the OS, then closed).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("a port");
    l.local_addr().expect("its address").port()
}

/// A GET with a bearer token: the status line.
fn get_with_token(addr: SocketAddr, path: &str, token: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("a timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("the request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn check_config_names_each_problem_on_its_line_and_fails() {
    let dir = scratch("check");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:7070\"\nshrads = 4\nhistory_messages_max = \"many\"\n\
         [storage]\nfsync = \"sometimes\"\n",
    )
    .expect("the file");
    let out = fanfare(&["check-config", bad.to_str().expect("a path")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    let p = bad.display();
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            format!("{p}:2:1: unknown key `shrads` (did you mean `shards`?)"),
            format!("{p}:3:24: invalid type: string \"many\", expected usize"),
            format!("{p}: [storage] settings need a data_dir (or --data-dir)"),
        ],
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let good = dir.join("good.toml");
    std::fs::write(&good, "listen = \"0.0.0.0:7070\"\nshards = 2\n").expect("the file");
    let out = fanfare(&["check-config", good.to_str().expect("a path")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        format!(
            "{}: ok: listen 0.0.0.0:7070, 2 shards (pinned), history in memory, \
             authentication OFF (no [[auth.keys]]), no TLS, a single node\n",
            good.display()
        )
    );

    let out = fanfare(&["check-config", "/nonexistent/fanfare.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "/nonexistent/fanfare.toml: cannot read: No such file or directory (os error 2)\n"
    );
    // `serve` says the same about the file in one line.
    let out = fanfare(&["serve", "--config", bad.to_str().expect("a path")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "fanfare: invalid settings: {p}:2:1: unknown key `shrads` (did you mean `shards`?)\n"
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// FANFARE_LISTEN and FANFARE_SHARDS set what the node binds and runs; a flag still wins.
#[test]
fn the_environment_sets_what_the_node_binds() {
    let serve = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanfare"));
        cmd.arg("serve").args(args).envs(env.iter().copied());
        cmd
    };
    // 127.0.0.2 is loopback too, and not the default 127.0.0.1.
    let env = [
        ("FANFARE_LISTEN", "127.0.0.2:0"),
        ("FANFARE_SHARDS", "1"),
        ("FANFARE_NO_PIN", "1"),
    ];
    let mut node = Node::start(serve(&env, &[]));
    assert_eq!(node.addr.ip().to_string(), "127.0.0.2");
    let (status, body) = common::http_request(node.addr, "GET /healthz", "");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, "ok");
    // Its first line said one shard, unpinned; SIGTERM stops it.
    let status = common::signal_and_wait(&mut node.child, "-TERM", WAIT);
    assert!(status.success(), "{status:?}");

    let node = Node::start(serve(&env, &["--listen", "127.0.0.1:0"]));
    assert_eq!(node.addr.ip().to_string(), "127.0.0.1", "the flag wins");
    let (status, _) = common::http_request(node.addr, "GET /healthz", "");
    assert!(status.contains(" 200 "), "{status}");
}

#[test]
fn the_first_line_reports_environment_shards() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanfare"))
        .arg("serve")
        .envs([
            ("FANFARE_LISTEN", "127.0.0.1:0"),
            ("FANFARE_SHARDS", "1"),
            ("FANFARE_NO_PIN", "true"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("fanfare runs");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    assert!(line.contains("(1 shards);"), "{line}");
    assert!(common::signal_and_wait(&mut child, "-TERM", WAIT).success());
}

/// Logs to a file or the journal carry no colour codes: stderr here is a pipe.
#[test]
fn logs_to_a_pipe_have_no_escape_codes() {
    let mut child = common::serve_command_with(1, "127.0.0.1:0")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fanfare runs");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The warning that authentication is off comes once the node is up.
    let deadline = Instant::now() + WAIT;
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &Vec<u8>| text(l).contains("authentication is OFF"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(e) => panic!("no warning on stderr within {WAIT:?} ({e}): {lines:?}"),
        }
    }
    assert!(common::signal_and_wait(&mut child, "-TERM", WAIT).success());
    for l in &lines {
        assert!(!l.contains(&0x1b), "an escape code in {:?}", text(l));
        assert!(
            text(l).contains("WARN") || text(l).contains("INFO"),
            "{}",
            text(l)
        );
    }
}

/// `pub` and `sub` against a closed port: non-zero at once, one line naming the address.
#[test]
fn pub_and_sub_fail_fast_naming_the_address() {
    let port = closed_port();
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    for args in [
        vec!["pub", "ns", "t", "hello", "--url", &url],
        vec!["sub", "ns", "t", "--url", &url],
    ] {
        let out = fanfare(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("fanfare: cannot connect to 127.0.0.1:{port}: ")),
            "{err}"
        );
        // Refused, so it gave up on the refusal: not after the ten seconds of silence a
        // connect timeout took (a wall-clock bound here would only measure the machine).
        assert!(err.contains(&format!("nothing listens at {url}")), "{err}");
    }
    // With --wait it says what it waits for, then gives up when the time is up.
    let out = fanfare(&["pub", "ns", "t", "x", "--url", &url, "--wait", "0.3"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!(
            "fanfare: waiting up to 0.3 s for a broker at {url}"
        )),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "fanfare: no broker answered at {url} within 0.3 s"
        )),
        "{err}"
    );
}

/// `bench` against a closed port: one line, the error's prefix once.
#[test]
fn bench_says_connection_once() {
    let port = closed_port();
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let out = fanfare(&["bench", "--url", &url, "--duration", "1", "--warmup", "0"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("fanfare: connection: 127.0.0.1:{port}: ")),
        "{err}"
    );
    assert_eq!(last.matches("connection:").count(), 1, "{err}");
    // Every flag of `bench --help` says what it does: its description follows on the next
    // line.
    let help = text(&fanfare(&["bench", "--help"]).stdout);
    let lines: Vec<&str> = help.lines().map(str::trim_start).collect();
    let flags: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("--"))
        .collect();
    assert!(flags.len() > 20, "{help}");
    for i in flags {
        let described = lines
            .get(i + 1)
            .is_some_and(|d| !d.is_empty() && !d.starts_with('-'));
        assert!(described, "{} has no description:\n{help}", lines[i]);
    }
}

/// `token inspect` shows what a token grants, says whether it checked it, and an `--admin`
/// token (the README's example) opens the admin API where a topic token gets 403.
#[test]
fn token_inspect_and_the_admin_right() {
    let dir = scratch("token");
    let keygen = |kid: &str, file: &str| {
        let key = fanfare(&["token", "keygen", "--kid", kid]);
        assert!(key.status.success());
        let path = dir.join(file);
        std::fs::write(&path, format!("[auth]\n{}", text(&key.stdout))).expect("the file");
        path
    };
    let cfg = keygen("k1", "fanfare.toml");
    let other = keygen("k1", "other.toml");
    let cfg_s = cfg.to_str().expect("a path");
    let mint = |extra: &[&str]| {
        let mut args = vec!["token", "create", "--config", cfg_s, "--ttl", "10m"];
        args.extend_from_slice(extra);
        let out = fanfare(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let admin = mint(&["--sub", "ops", "--admin"]);
    let alice = mint(&[
        "--sub",
        "alice",
        "--ns",
        "chat",
        "--topic",
        "room-*",
        "--publish",
        "--subscribe",
    ]);

    let out = fanfare(&["token", "inspect", &alice]);
    assert!(out.status.success(), "{out:?}");
    let shown = text(&out.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].starts_with("NOT VERIFIED"), "{shown}");
    for want in [
        "key        k1 (EdDSA)",
        "subject    alice",
        "admin      no",
        "grants     publish, subscribe on chat/room-*",
    ] {
        assert!(lines.contains(&want), "{want:?} in {shown}");
    }
    assert!(
        lines.iter().any(
            |l| l.starts_with("expires") && (l.ends_with("(in 9m)") || l.ends_with("(in 10m)"))
        ),
        "{shown}"
    );

    let out = fanfare(&["token", "inspect", &admin, "--config", cfg_s]);
    assert!(out.status.success(), "{out:?}");
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with(&format!(
            "valid: signature verified with key k1 from {cfg_s}\n"
        )),
        "{shown}"
    );
    assert!(shown.contains("admin      yes"), "{shown}");

    // Another key with the same id: the signature does not verify.
    let out = fanfare(&[
        "token",
        "inspect",
        &admin,
        "--config",
        other.to_str().expect("a path"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with("REFUSED by the keys in "),
        "{out:?}"
    );
    assert_eq!(
        text(&out.stderr),
        "fanfare: token refused: bad token signature\n"
    );
    assert_eq!(
        fanfare(&["token", "inspect", "not-a-token"]).status.code(),
        Some(1)
    );
    // A token in the environment is never echoed by --help.
    for cmd in ["pub", "sub", "bench"] {
        let out = Command::new(env!("CARGO_BIN_EXE_fanfare"))
            .args([cmd, "--help"])
            .env("FANFARE_TOKEN", &alice)
            .output()
            .expect("fanfare runs");
        assert!(out.status.success());
        assert!(
            !text(&out.stdout).contains(&alice),
            "{cmd} --help shows the token"
        );
    }

    let mut cmd = common::serve_command_with(1, "127.0.0.1:0");
    cmd.args(["--config", cfg_s]);
    let node = Node::start(cmd);
    let stats = "/v1/admin/stats";
    assert!(get_with_token(node.addr, stats, &admin).contains(" 200 "));
    assert!(get_with_token(node.addr, stats, &alice).contains(" 403 "));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Completions and man pages come from the binary's own command line.
#[test]
fn completions_and_man_pages_describe_the_binary() {
    for shell in ["bash", "zsh", "fish"] {
        let out = fanfare(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = text(&out.stdout);
        for word in ["serve", "check-config", "--data-dir", "inspect"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = fanfare(&["man"]);
    assert!(out.status.success());
    let page = text(&out.stdout);
    assert!(page.contains(".TH fanfare 1"), "{page}");
    assert!(page.contains("check\\-config"), "{page}");
    let dir = scratch("man");
    let out = fanfare(&["man", "--out-dir", dir.to_str().expect("a path")]);
    assert!(out.status.success(), "{out:?}");
    let serve = std::fs::read_to_string(dir.join("fanfare-serve.1")).expect("fanfare-serve.1");
    assert!(
        serve.contains("FANFARE_LISTEN"),
        "the environment is in the page"
    );
    assert!(dir.join("fanfare-token-inspect.1").exists());
    assert!(
        !dir.join("fanfare-completions.1").exists(),
        "hidden commands have no page"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
