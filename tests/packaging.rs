//! What packaging/build.sh ships, checked without building a release or a package (both too
//! slow for every CI run): the systemd unit, the Debian package's metadata and maintainer
//! scripts, and the container file, read as files; then the unit's own command line and the
//! container's health check run for real against the debug binary and the example settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::Node;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The unit's `Key=value` lines (the last one of a key wins, as in systemd; comments out).
fn unit() -> BTreeMap<String, String> {
    read("packaging/fanfare.service")
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A data dir on the disk the tests' target dir is on (O_DIRECT: not a tmpfs).
fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("packaging-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The limits and settings docs/operations.md asks of the service.
#[test]
fn the_unit_has_the_limits_and_user_the_docs_ask_for() {
    let u = unit();
    for (key, want) in [
        ("User", "fanfare"),
        ("Group", "fanfare"),
        ("LimitNOFILE", "1048576"),
        ("LimitMEMLOCK", "infinity"),
        ("StateDirectory", "fanfare"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(u.get(key).map(String::as_str), Some(want), "{key}");
    }
    assert_eq!(
        u.get("ExecStart").map(String::as_str),
        Some("/usr/bin/fanfare serve --config /etc/fanfare/fanfare.toml --log-json")
    );
    // systemd's own check, where systemd is installed: no unknown key, no bad value.
    let dir = data_dir("unit");
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    let copy = dir.join("fanfare.service");
    let text = read("packaging/fanfare.service")
        .replace("/usr/bin/fanfare", env!("CARGO_BIN_EXE_fanfare"));
    std::fs::write(&copy, text).expect("a copy of the unit");
    match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
    {
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && err.trim().is_empty(), "{err}");
        }
        Err(e) => eprintln!("systemd-analyze not run ({e}): the unit's keys were not verified"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[package.metadata.deb]`: the binary, the settings under /etc/fanfare, completions, man
/// pages and docs, the unit, and maintainer scripts that make the user and the data dir.
#[test]
fn the_deb_metadata_ships_binary_unit_settings_and_scripts() {
    let manifest: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml parses");
    let deb = manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]");
    let assets: Vec<(String, String, String)> = deb["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| {
            let a = a.as_array().expect("[source, dest, mode]");
            let s = |i: usize| a[i].as_str().expect("a string").to_owned();
            (s(0), s(1), s(2))
        })
        .collect();
    let has = |source: &str, dest: &str, mode: &str| {
        assert!(
            assets
                .iter()
                .any(|a| a == &(source.into(), dest.into(), mode.into())),
            "asset {source} -> {dest} ({mode}) in {assets:#?}"
        )
    };
    has("target/release/fanfare", "usr/bin/", "755");
    has("packaging/fanfare.toml", "etc/fanfare/fanfare.toml", "640");
    has(
        "target/release/packaging/completions/fanfare.bash",
        "usr/share/bash-completion/completions/fanfare",
        "644",
    );
    has(
        "target/release/packaging/man/*.1.gz",
        "usr/share/man/man1/",
        "644",
    );
    // Every source outside the build output is in the repository.
    for (source, _, _) in &assets {
        if !source.starts_with("target/") {
            assert!(repo(source).is_file(), "{source} is missing");
        }
    }
    // The generated ones are what packaging/build.sh writes.
    let build = read("packaging/build.sh");
    for line in [
        "\"$bin\" completions bash >\"$out/completions/fanfare.bash\"",
        "\"$bin\" completions zsh >\"$out/completions/_fanfare\"",
        "\"$bin\" completions fish >\"$out/completions/fanfare.fish\"",
        "\"$bin\" man --out-dir \"$out/man\"",
        "cargo install cargo-deb --locked",
    ] {
        assert!(build.contains(line), "packaging/build.sh: {line}");
    }
    let ok = Command::new("bash")
        .arg("-n")
        .arg(repo("packaging/build.sh"))
        .status();
    assert!(ok.is_ok_and(|s| s.success()), "packaging/build.sh parses");
    assert_eq!(deb["depends"].as_str(), Some("$auto, adduser"));
    let units = deb["systemd-units"].as_table().expect("systemd-units");
    let dir = units["unit-scripts"].as_str().expect("unit-scripts");
    assert!(repo(dir).join("fanfare.service").is_file());
    assert_eq!(
        units["enable"].as_bool(),
        Some(false),
        "review settings first"
    );
    let scripts = deb["maintainer-scripts"]
        .as_str()
        .expect("maintainer-scripts");
    let postinst = read(&format!("{scripts}postinst"));
    for want in [
        "adduser --system --group",
        "fanfare",
        "install -d -o fanfare -g fanfare -m 0750 /var/lib/fanfare",
        "chown root:fanfare /etc/fanfare/fanfare.toml",
        "#DEBHELPER#",
    ] {
        assert!(postinst.contains(want), "postinst: {want}");
    }
    let postrm = read(&format!("{scripts}postrm"));
    assert!(postrm.contains("purge)") && postrm.contains("rm -rf /var/lib/fanfare"));
    // The scripts are executable and parse as POSIX shell; each has the debhelper token
    // once (cargo-deb replaces every occurrence, a comment's too, with its systemd part).
    for name in ["postinst", "prerm", "postrm"] {
        let path = repo(&format!("{scripts}{name}"));
        let text = read(&format!("{scripts}{name}"));
        assert_eq!(text.matches("#DEBHELPER#").count(), 1, "{name}");
        assert!(
            text.lines().any(|l| l == "#DEBHELPER#"),
            "{name}: on its own line"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("the script").permissions(),
        );
        assert_eq!(mode & 0o111, 0o111, "{name} is executable");
        let ok = Command::new("sh").arg("-n").arg(&path).status();
        assert!(ok.is_ok_and(|s| s.success()), "{name} parses");
    }
}

/// The unit's ExecStart, with the debug binary and the example settings, and a host's
/// overrides in the environment (as /etc/default/fanfare gives them): it starts, serves
/// /healthz, logs JSON lines, and drains and exits 0 on SIGTERM.
#[test]
fn the_units_command_line_serves_and_stops_on_sigterm() {
    let settings = repo("packaging/fanfare.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_fanfare"))
        .arg("check-config")
        .arg(&settings)
        .output()
        .expect("fanfare runs");
    assert!(out.status.success(), "{out:?}");

    let u = unit();
    let exec = u["ExecStart"]
        .replace("/usr/bin/fanfare", env!("CARGO_BIN_EXE_fanfare"))
        .replace(
            "/etc/fanfare/fanfare.toml",
            settings.to_str().expect("a path"),
        );
    let mut argv = exec.split_whitespace();
    let mut cmd = Command::new(argv.next().expect("a program"));
    cmd.args(argv);
    let data = data_dir("exec");
    cmd.env("FANFARE_LISTEN", "127.0.0.1:0")
        .env("FANFARE_SHARDS", "1")
        .env("FANFARE_NO_PIN", "1")
        .env("FANFARE_DATA_DIR", &data);
    let node = Node::start_keeping_stderr(cmd);
    let (status, body) = common::http_request(node.addr, "GET /healthz", "");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, "ok");
    let (status, body) = common::http_request(node.addr, "POST /v1/topics/ns/kept", "m");
    assert!(status.contains(" 200 "), "{status} {body}");
    assert!(body.contains("\"durability\":\"synced\""), "{body}");
    assert!(
        data.join("fanfare-layout").is_file(),
        "history in the data dir"
    );
    let (status, err) = node.terminate();
    assert!(status.success(), "{status:?}: {err}");
    // --log-json: one JSON object per line, for the journal.
    assert!(!err.is_empty());
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    let _ = std::fs::remove_dir_all(&data);
}

/// The container file: a build stage and a slim runtime stage, a user that is not root, the
/// data dir a volume; its HEALTHCHECK command passes against a running node (with the
/// image's environment) and fails once the node is gone.
#[test]
fn the_container_healthcheck_probes_healthz() {
    let file = read("Containerfile").replace("\\\n", " ");
    let lines: Vec<&str> = file.lines().map(str::trim).collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(froms[0].ends_with(" AS build"), "{froms:?}");
    assert_eq!(froms[1], "docker.io/library/debian:bookworm-slim");
    let after_runtime: Vec<&str> = lines
        .iter()
        .skip_while(|l| !l.contains("bookworm-slim"))
        .copied()
        .collect();
    assert!(after_runtime.contains(&"USER fanfare"), "not root");
    assert!(after_runtime.contains(&"VOLUME /var/lib/fanfare"));
    assert!(after_runtime.contains(&"ENTRYPOINT [\"/usr/bin/fanfare\"]"));
    let env: Vec<(String, String)> = after_runtime
        .iter()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(env.contains(&("FANFARE_DATA_DIR".into(), "/var/lib/fanfare".into())));
    let check = after_runtime
        .iter()
        .find_map(|l| l.strip_prefix("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    let argv: Vec<String> = serde_json::from_str(&check[check.find("CMD [").expect("CMD") + 4..])
        .expect("the exec form: a JSON array");

    // The image's environment, with a port and data dir of this test's.
    let data = data_dir("container");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanfare"));
    cmd.arg("serve")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("FANFARE_LISTEN", "127.0.0.1:0")
        .env("FANFARE_SHARDS", "1")
        .env("FANFARE_DATA_DIR", &data);
    let node = Node::start_keeping_stderr(cmd);
    let listen = format!("0.0.0.0:{}", node.addr.port());
    let probe = || {
        Command::new(&argv[0])
            .args(&argv[1..])
            .env("FANFARE_LISTEN", &listen)
            .stderr(Stdio::null())
            .status()
            .expect("the health check runs")
    };
    assert!(probe().success(), "healthy while serving");
    let (status, _) = node.terminate();
    assert!(status.success());
    assert!(!probe().success(), "unhealthy once stopped");
    let _ = std::fs::remove_dir_all(&data);
}
