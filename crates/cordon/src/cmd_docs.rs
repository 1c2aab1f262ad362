//! `cordon completions SHELL` and `cordon man --out DIR`: shell completion scripts and man pages,
//! both generated from the clap definition of the command line, so they cannot drift from it.

use crate::util;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
cordon completions bash > ~/.local/share/bash-completion/completions/cordon\n  \
cordon completions zsh > \"${fpath[1]}/_cordon\"\n  \
cordon completions fish > ~/.config/fish/completions/cordon.fish")]
pub struct CompletionsArgs {
    /// The shell to write a completion script for (on stdout).
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
cordon man --out ~/.local/share/man/man1 && man cordon-kbs-serve\n  \
cordon man --out target/man --force")]
pub struct ManArgs {
    /// Directory to write the pages to (created if missing): cordon.1, and one page per command
    /// and subcommand (cordon-seal.1, cordon-kbs-serve.1, ...).
    #[arg(long)]
    out: PathBuf,
    /// Replace pages that exist already.
    #[arg(long)]
    force: bool,
}

pub fn completions(a: CompletionsArgs, mut cmd: clap::Command) -> Result<()> {
    use std::io::Write;
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, name, &mut script);
    // `cordon completions bash | head` is not an error.
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the completion script"),
    }
}

/// Every page of `cmd` and its subcommands (not `help`), as (file name, roff text).
pub fn man_pages(cmd: clap::Command) -> Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, pages)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let mut text = Vec::new();
        man.render(&mut text)?;
        pages.push((man.get_filename(), text));
        Ok(())
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    walk(cmd, &mut pages)?;
    pages.sort();
    Ok(pages)
}

pub fn man(a: ManArgs, cmd: clap::Command) -> Result<()> {
    let pages = man_pages(cmd)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    // All or nothing: refuse before writing anything.
    if !a.force {
        if let Some((name, _)) = pages.iter().find(|(n, _)| exists(&a.out.join(n))) {
            bail!(
                "{} already exists; refusing to overwrite it (pass --force to replace it)",
                a.out.join(name).display()
            );
        }
    }
    for (name, text) in &pages {
        util::write_atomic(&a.out.join(name), text)?;
    }
    println!(
        "wrote {} man pages to {} (cordon.1 and one per command)",
        pages.len(),
        a.out.display()
    );
    Ok(())
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}
