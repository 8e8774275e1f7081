//! The /metrics exposition of a live node, scraped over HTTP: every family documented, the
//! standard `process_*` series and `fanfare_build_info` present, cluster series only in a
//! cluster.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{curl, server, server_with};
use fanfare_net::cluster::ClusterConfig;

/// One scrape, split into families (`# TYPE`), their HELP text and their samples.
struct Scrape {
    text: String,
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    /// Sample name (with a histogram's suffix) to its values.
    samples: BTreeMap<String, Vec<f64>>,
}

impl Scrape {
    fn of(addr: std::net::SocketAddr) -> Scrape {
        let (text, err) = curl(&[&format!("http://{addr}/metrics")]);
        assert!(err.is_empty(), "{err}");
        let mut s = Scrape {
            text: text.clone(),
            types: BTreeMap::new(),
            helps: BTreeMap::new(),
            samples: BTreeMap::new(),
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(
                    s.types.insert(name.into(), kind.into()).is_none(),
                    "{name} typed twice"
                );
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                assert!(!s.types.contains_key(name), "HELP of {name} after its TYPE");
                s.helps.insert(name.into(), help.into());
            } else {
                let (series, value) = line.rsplit_once(' ').expect("a sample");
                let name = series.split('{').next().unwrap_or(series);
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
                s.samples.entry(name.into()).or_default().push(value);
            }
        }
        s
    }

    fn value(&self, name: &str) -> f64 {
        let v = self
            .samples
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(v.len(), 1, "{name}: one series");
        v[0]
    }
}

#[test]
fn every_family_has_help_and_a_type() {
    let srv = server();
    let s = Scrape::of(srv.local_addr());
    assert!(s.types.len() > 50, "{} families", s.types.len());
    for name in s.types.keys() {
        let help = s.helps.get(name).map(String::as_str).unwrap_or_default();
        assert!(!help.trim().is_empty(), "{name} has no HELP");
        assert!(!help.contains('\n'), "{name}");
    }
    let undocumented: BTreeSet<_> = s
        .helps
        .keys()
        .filter(|n| !s.types.contains_key(*n))
        .collect();
    assert!(
        undocumented.is_empty(),
        "HELP without TYPE: {undocumented:?}"
    );
    // Every sample belongs to a typed family (a histogram's samples carry a suffix).
    for name in s.samples.keys() {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (s.types.get(base)? == "histogram").then_some(base)
            })
            .unwrap_or(name);
        assert!(s.types.contains_key(family), "{name} has no TYPE");
    }
    // The help text is the counter's doc comment.
    assert_eq!(
        s.helps["fanfare_net_sent_bytes_total"],
        "Bytes written to sockets."
    );
    assert!(s.helps["fanfare_engine_storage_errors_total"].starts_with("Writes or syncs of"));
}

#[test]
fn process_series_and_build_info() {
    let srv = server();
    let s = Scrape::of(srv.local_addr());
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("fanfare_build_info", "gauge"),
    ] {
        assert_eq!(s.types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    let rss = s.value("process_resident_memory_bytes");
    assert!(rss > 1e6, "rss {rss}");
    assert!(s.value("process_virtual_memory_bytes") >= rss);
    // This process: the node's listeners, the scrape's connection, the test harness.
    let fds = s.value("process_open_fds");
    assert!(fds >= 3.0, "open fds {fds}");
    assert!(s.value("process_max_fds") >= fds);
    assert!(s.value("process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = s.value("process_start_time_seconds");
    assert!(
        start <= now + 1.0 && start > now - 3600.0,
        "start {start}, now {now}"
    );
    assert!(
        s.text.contains(&format!(
            "fanfare_build_info{{version=\"{}\",",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        s.text
    );
    assert_eq!(s.value("fanfare_build_info"), 1.0);
}

#[test]
fn cluster_series_only_in_a_cluster() {
    let single = server();
    let s = Scrape::of(single.local_addr());
    let cluster: Vec<_> = s
        .types
        .keys()
        .filter(|n| n.starts_with("fanfare_net_cluster_"))
        .collect();
    assert!(cluster.is_empty(), "a single node exports {cluster:?}");
    assert!(!s.text.contains("fanfare_net_cluster_"));

    let node = server_with(|c| {
        let mut cc = ClusterConfig::default();
        cc.node_id = "n1".into();
        cc.listen = "127.0.0.1:0".parse().unwrap();
        c.cluster = Some(cc);
    });
    let s = Scrape::of(node.local_addr());
    for name in [
        "fanfare_net_cluster_members",
        "fanfare_net_cluster_link_frames_out_total",
    ] {
        assert!(s.types.contains_key(name), "a cluster node lacks {name}");
        assert!(!s.helps[name].is_empty());
    }
}
