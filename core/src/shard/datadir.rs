//! The data dir as a whole: one broker at a time (a lock file, which also tells whether the
//! machine restarted under the last broker), and the shard count that wrote it. The logs
//! inside it are `store.rs`'s.

/// The file in a data dir that records how many shards wrote it.
const LAYOUT_FILE: &str = "fanfare-layout";

/// The file in a data dir that a running broker holds locked.
const LOCK_FILE: &str = "fanfare.lock";

/// The data dir, taken by this process (see [`lock_data_dir`]).
pub(crate) struct DataDirLock {
    file: std::fs::File,
    boot: String,
    /// The last broker on this dir was running when the machine restarted (it neither
    /// stopped cleanly nor ran on this boot).
    pub(crate) rebooted_under_it: bool,
}

impl DataDirLock {
    /// Records that the broker stopped cleanly (every write done, and synced: see
    /// `store_loop`), so a restart of the machine after it costs nothing.
    pub(crate) fn stopped_cleanly(&mut self) {
        if let Err(e) = write_state(&mut self.file, &self.boot, "clean") {
            tracing::warn!(error = %e, "cannot record a clean stop in the data dir's lock file");
        }
    }
}

/// This boot of the machine (the kernel's boot id); empty where there is none.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn write_state(f: &mut std::fs::File, boot: &str, state: &str) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "pid={} boot={boot} state={state}", std::process::id())?;
    f.sync_all()
}

/// Takes the data dir `dir` for this process: an exclusive lock on its lock file, held as long
/// as the returned lock lives (the kernel lets go of it when the process ends, `kill -9`
/// included). Two brokers writing one log would destroy it; a second one is refused, naming
/// the process that holds the dir. The file also says whether the last broker on the dir was
/// running when the machine restarted under it: then, with `fsync = "never"`, acknowledged
/// messages it had not synced may be lost (docs/storage.md, "What a crash can cost").
pub(crate) fn lock_data_dir(dir: &std::path::Path) -> Result<DataDirLock, String> {
    use std::io::Read;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the data dir {}: {e}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let pid = holder
                .split_whitespace()
                .find_map(|w| w.strip_prefix("pid="))
                .unwrap_or("unknown");
            return Err(format!(
                "the data dir {} is in use by another fanfare process (pid {pid}): one broker \
                 per data dir",
                dir.display()
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", path.display()))
        }
    }
    let mut before = String::new();
    let _ = f.read_to_string(&mut before);
    let field = |name: &str| {
        before
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_owned)
    };
    let boot = boot_id();
    let rebooted_under_it =
        field("state=").as_deref() == Some("running") && field("boot=").is_some_and(|b| b != boot);
    write_state(&mut f, &boot, "running")
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(DataDirLock {
        file: f,
        boot,
        rebooted_under_it,
    })
}

/// Checks that the data dir `dir` was written by a broker with `shards` shards (a topic's log
/// is its owning shard's, and placement depends on the count), creating the dir and its
/// layout file when new. The error says what to do.
pub(crate) fn check_layout(dir: &std::path::Path, shards: usize) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the data dir {}: {e}", dir.display()))?;
    let path = dir.join(LAYOUT_FILE);
    let want = format!("shards = {shards}\n");
    match std::fs::read_to_string(&path) {
        Ok(have) if have == want => Ok(()),
        Ok(have) => Err(format!(
            "the data dir {} was written by a broker with {} (this one runs {shards}): topics \
             are placed by shard, so start with that many shards (--shards), or use another \
             data dir",
            dir.display(),
            have.trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let written = std::fs::write(&path, &want)
                .and_then(|()| std::fs::File::open(&path)?.sync_all())
                .and_then(|()| std::fs::File::open(dir)?.sync_all());
            written.map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}
