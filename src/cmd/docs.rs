//! `fanfare completions SHELL` and `fanfare man`: shell completions and man pages generated
//! from the command-line definition the binary itself runs with, so a package's copies (see
//! packaging/build.sh) always match the binary they ship with. Both commands are hidden from
//! `--help`: they are for packagers.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `shell`'s completion script for `cmd` to `out`.
pub fn completions(
    shell: clap_complete::Shell,
    mut cmd: clap::Command,
    out: &mut dyn Write,
) -> Result<()> {
    clap_complete::generate(shell, &mut cmd, "fanfare", out);
    out.flush().context("cannot write the completions")
}

/// Prints the man page of `cmd` (fanfare(1)) on stdout, or, with `out_dir`, writes one page
/// per visible command there: fanfare.1, fanfare-serve.1, fanfare-token-create.1, ...
pub fn man(cmd: clap::Command, out_dir: Option<&Path>) -> Result<()> {
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .and_then(|()| out.flush())
                .context("cannot write the man page")
        }
    }
}
