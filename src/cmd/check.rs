//! `fanfare check-config FILE`: every problem in a settings file, one line each, or a short
//! summary of what it sets. It checks what `serve` would check before binding anything: the
//! TOML, every key and value, the ranges, and the files the settings name (TLS certificates
//! and keys, key files, cluster certificates). It does not apply the environment or flags,
//! and does not look at the machine (ports, CPUs online, the data dir's filesystem).

use std::path::Path;

use fanfare::settings::{toml_error_line, Settings};

/// Problems reported at most: past this many, the rest of the file is not read.
const PROBLEMS_MAX: usize = 20;

/// Checks the settings file at `path`: prints each problem on stderr, one line each, or one
/// "ok" line on stdout. Returns the number of problems.
pub fn check_config(path: &Path) -> usize {
    match check(path) {
        Ok(summary) => {
            println!("{}: ok: {summary}", path.display());
            0
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            problems.len()
        }
    }
}

/// What the file sets, or every problem found in it.
fn check(path: &Path) -> Result<String, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    let mut problems = Vec::new();
    let settings = parse(path, &text, &mut problems);
    if let Some(s) = &settings {
        for p in values(s) {
            problems.push(format!("{}: {}", path.display(), p.replace('\n', " ")));
        }
    }
    match settings {
        Some(s) if problems.is_empty() => Ok(summary(&s)),
        _ => Err(problems),
    }
}

/// Parses `text`, reporting each unknown key or wrong type: after each, the entry (or the
/// table whose header is wrong) is commented out and the rest parsed again, so one run names
/// them all. A TOML syntax error stops it (what follows cannot be read reliably).
fn parse(path: &Path, text: &str, problems: &mut Vec<String>) -> Option<Settings> {
    if let Err(e) = text.parse::<toml::Table>() {
        problems.push(toml_error_line(path, text, &e));
        return None;
    }
    let mut text = text.to_owned();
    while problems.len() < PROBLEMS_MAX {
        let e = match toml::from_str::<Settings>(&text) {
            Ok(s) => return Some(s),
            Err(e) => e,
        };
        problems.push(toml_error_line(path, &text, &e));
        let next = without_entry(&text, e.span()?.start)?;
        // Commenting out part of a value that spans lines would break the syntax: stop.
        next.parse::<toml::Table>().ok()?;
        text = next;
    }
    None
}

/// `text` with the line holding byte `at` commented out, or, when that line is a table header,
/// the whole table; lines keep their numbers. None when nothing would change.
fn without_entry(text: &str, at: usize) -> Option<String> {
    let start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..start]);
    let mut lines = text[start..].split_inclusive('\n');
    let first = lines.next()?;
    if first.trim_start().starts_with('#') {
        return None;
    }
    let header = first.trim_start().starts_with('[');
    out.push('#');
    out.push_str(first);
    let mut in_table = header;
    for line in lines {
        in_table &= !line.trim_start().starts_with('[');
        if in_table && !line.trim().is_empty() {
            out.push('#');
        }
        out.push_str(line);
    }
    Some(out)
}

/// The problems with the values: each part checked on its own, so one bad part does not hide
/// another.
fn values(s: &Settings) -> Vec<String> {
    let mut problems = Vec::new();
    let mut c = s.server_config();
    if let Some(st) = &s.storage {
        match st.storage_config() {
            Ok(storage) => c.engine.storage = storage,
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if let Err(e) = c.engine.validate() {
        problems.push(e);
    }
    let envelope = fanfare::net::ENVELOPE_BYTES_MAX;
    if c.engine.message_bytes_max.saturating_add(envelope) > c.limits.frame_bytes_max {
        problems.push(format!(
            "message_bytes_max ({}) plus {envelope} bytes of envelope is over frame_bytes_max \
             ({}): raise frame_bytes_max or lower message_bytes_max",
            c.engine.message_bytes_max, c.limits.frame_bytes_max
        ));
    }
    if let (true, Some(cpus)) = (c.engine.pin, &c.engine.cpus) {
        if c.engine.shards > cpus.len() {
            problems.push(format!(
                "pinning {} shards needs as many CPUs; cpus lists {}",
                c.engine.shards,
                cpus.len()
            ));
        }
    }
    match (&s.tls_cert_path, &s.tls_key_path) {
        (Some(cert), Some(key)) => {
            if let Err(e) = fanfare::net::tls_from_pem(cert, key) {
                problems.push(e.to_string());
            }
        }
        (None, None) => {}
        _ => problems.push("TLS needs both tls_cert_path and tls_key_path".to_owned()),
    }
    if let Some(a) = &s.auth {
        let mut keys = Vec::new();
        for k in &a.keys {
            match k.key() {
                Ok(key) => keys.push(key),
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        if let Err(e) = fanfare::net::auth::Verifier::new(&keys, std::time::Duration::ZERO) {
            problems.push(e);
        }
    }
    if let Some(cl) = &s.cluster {
        if let Err(e) = cl.cluster_config() {
            problems.push(format!("{e:#}"));
        }
    }
    problems
}

/// One line on what valid settings set.
fn summary(s: &Settings) -> String {
    let c = s.server_config();
    let shards = match c.engine.shards {
        0 => "one shard per core".to_owned(),
        n => format!("{n} shards"),
    };
    let pinned = if c.engine.pin { "pinned" } else { "not pinned" };
    let history = match s.storage.as_ref().and_then(|st| st.data_dir.as_ref()) {
        Some(dir) => format!("history on disk in {}", dir.display()),
        None => "history in memory".to_owned(),
    };
    let keys = s.auth.as_ref().map_or(0, |a| a.keys.len());
    let auth = match keys {
        0 => "authentication OFF (no [[auth.keys]])".to_owned(),
        n => format!("authentication on ({n} keys)"),
    };
    let tls = if s.tls_cert_path.is_some() {
        "TLS on"
    } else {
        "no TLS"
    };
    let cluster = match s.cluster.as_ref().and_then(|cl| cl.node_id.as_deref()) {
        Some(id) => format!("cluster node {id}"),
        None => "a single node".to_owned(),
    };
    format!(
        "listen {}, {shards} ({pinned}), {history}, {auth}, {tls}, {cluster}",
        c.listen
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!("fanfare-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch dir");
        let path = dir.join(format!("{:x}.toml", text.len() * 31 + text.lines().count()));
        std::fs::write(&path, text).expect("the file");
        let got = check(&path).err().unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        got.into_iter()
            .map(|p| p.split_once(": ").map_or(p.clone(), |(_, m)| m.to_owned()))
            .collect()
    }

    #[test]
    fn every_problem_is_named_once_on_its_line() {
        let got = problems(
            "lisen = \"0.0.0.0:7070\"\nshards = \"two\"\nname_bytes_max = 65\n\
             [storage]\nfsync = \"sometimes\"\ndata_dir = \"/var/lib/fanfare\"\n",
        );
        assert_eq!(
            got,
            [
                "unknown key `lisen` (did you mean `listen`?)",
                "invalid type: string \"two\", expected usize",
                "[storage] fsync must be \"always\" or \"never\", not \"sometimes\"",
                "name_bytes_max must be 1..=64",
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn a_wrong_table_goes_with_its_keys() {
        let got = problems("[clustr]\nnode_id = \"n1\"\n[storage]\nfsync = \"never\"\n");
        assert_eq!(
            got,
            [
                "unknown key `clustr` (did you mean `cluster`?)",
                "[storage] settings need a data_dir (or --data-dir)",
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn a_syntax_error_stops_the_check() {
        let got = problems("listen = \"a\nshards = 2\nbad = \n");
        assert_eq!(got.len(), 1, "{got:#?}");
    }

    #[test]
    fn without_entry_keeps_line_numbers() {
        let text = "a = 1\n[t]\nb = 2\n\nc = 3\n[u]\nd = 4\n";
        let at = text.find("[t]").unwrap_or_default();
        assert_eq!(
            without_entry(text, at).as_deref(),
            Some("a = 1\n#[t]\n#b = 2\n\n#c = 3\n[u]\nd = 4\n")
        );
        assert_eq!(
            without_entry(text, 0).as_deref(),
            Some("#a = 1\n[t]\nb = 2\n\nc = 3\n[u]\nd = 4\n")
        );
    }
}
