//! The standard `process_*` series (CPU time, memory, file descriptors, start time) that
//! Prometheus client libraries export, read from `/proc/self` at each scrape (Linux only;
//! elsewhere they are left out). A file that cannot be read leaves its series out rather than
//! failing the scrape.

use std::fmt::Write as _;

/// Clock ticks per second of the CPU times in `/proc/self/stat` (the kernel's `USER_HZ`, 100
/// on every architecture Rust targets).
const USER_HZ: f64 = 100.0;

/// Appends every `process_*` family that could be read, each with HELP and TYPE lines.
pub(super) fn render(out: &mut String) {
    let p = Process::read();
    let families: [(&str, &str, &str, Option<f64>); 6] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds,
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors (the soft limit).",
            p.max_fds,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in families {
        if let Some(v) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
}

/// What `/proc/self` says about this process; `None` where it could not be read.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
    start_time_seconds: Option<f64>,
}

impl Process {
    #[cfg(target_os = "linux")]
    fn read() -> Self {
        let text = |path: &str| std::fs::read_to_string(path).ok();
        let stat = text("/proc/self/stat").and_then(|s| Stat::parse(&s));
        let status = text("/proc/self/status");
        let kib = |key: &str| Some(status_kib(status.as_deref()?, key)? as f64 * 1024.0);
        let boot_time = text("/proc/stat").and_then(|s| boot_time(&s));
        Process {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / USER_HZ),
            resident_bytes: kib("VmRSS:"),
            virtual_bytes: kib("VmSize:"),
            // Counts the directory's own descriptor too, as client_golang does.
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as f64),
            max_fds: text("/proc/self/limits").and_then(|s| max_open_files(&s)),
            start_time_seconds: stat
                .zip(boot_time)
                .map(|(s, boot)| boot as f64 + s.starttime as f64 / USER_HZ),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn read() -> Self {
        Process::default()
    }
}

/// The fields of `/proc/self/stat` the series need, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    /// Since boot.
    starttime: u64,
}

impl Stat {
    fn parse(s: &str) -> Option<Stat> {
        // The command name (field 2) is in parentheses and may hold spaces or ')': the
        // fields after it start after the last ')', with field 3 (state) first.
        let rest = &s[s.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
        })
    }
}

/// A `Key:   N kB` line of `/proc/self/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Boot time (seconds since the epoch) from `/proc/stat`'s `btime` line.
fn boot_time(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line["btime ".len()..].trim().parse().ok()
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`None` when unlimited).
fn max_open_files(limits: &str) -> Option<f64> {
    let key = "Max open files";
    let line = limits.lines().find(|l| l.starts_with(key))?;
    let soft = line[key.len()..].split_whitespace().next()?;
    soft.parse::<u64>().ok().map(|n| n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "4242 (fan fare) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    3 0 123456 1000000 500 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                utime: 250,
                stime: 50,
                starttime: 123456
            })
        );
        assert_eq!(Stat::parse("garbage"), None);
    }

    #[test]
    fn parses_status_limits_and_boot_time() {
        let status = "Name:\tfanfare\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048));
        assert_eq!(status_kib(status, "VmSize:"), Some(123456));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), None);
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let p = Process::read();
        assert!(p.resident_bytes.is_some_and(|v| v > 0.0), "{p:?}");
        assert!(p.open_fds.is_some_and(|v| v >= 3.0), "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        assert!(p
            .start_time_seconds
            .is_some_and(|t| t <= now + 1.0 && t > now - 86_400.0 * 365.0));
    }
}
