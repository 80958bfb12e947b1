//! `srvctl generate`: shell completions and man pages, rendered from the
//! clap definitions of srvctl and srvd so they never drift from the real
//! flags. Hidden from `--help`; `make install` and `make deb` run it.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Subcommand, ValueEnum};

use super::Cli;
use super::srvd_args::SrvdArgs;

/// What `srvctl generate` writes.
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Print the completion script of srvctl for SHELL on stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages into DIR: srvctl(1), one srvctl-COMMAND(1) per
    /// command, and srvd(8).
    Man {
        /// Where the pages are written (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// The shells completions are generated for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh (compsys).
    Zsh,
    /// fish.
    Fish,
}

impl Generate {
    /// Runs the generator; returns the exit code.
    pub fn run(&self) -> u8 {
        match self {
            Generate::Completions { shell } => {
                let mut out = Vec::new();
                completions(*shell, &mut out);
                match std::io::stdout().lock().write_all(&out) {
                    Ok(()) => super::exit::DONE,
                    Err(_) => super::exit::REFUSED,
                }
            }
            Generate::Man { dir } => match man_pages(dir) {
                Ok(_) => super::exit::DONE,
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "srvctl: generate man {}: {e}", dir.display());
                    super::exit::REFUSED
                }
            },
        }
    }
}

/// Writes srvctl's completion script for `shell` into `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "srvctl", out);
}

/// Writes the man pages into `dir` (created if missing); returns their paths.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)?;
    clap_mangen::Man::new(SrvdArgs::command()).section("8").manual("System Administration").generate_to(dir)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1" || x == "8"))
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completion_knows_every_command_and_the_socket_flag() {
        let mut out = Vec::new();
        completions(Shell::Bash, &mut out);
        let text = String::from_utf8(out).unwrap();
        for word in ["add-master", "remove-master", "drain", "undrain", "set-weight", "explain", "reload", "--socket"] {
            assert!(text.contains(word), "bash completion lacks {word}");
        }
    }

    #[test]
    fn man_pages_for_srvctl_its_commands_and_srvd() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(dir.path()).unwrap();
        let names: Vec<String> = pages.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for want in ["srvctl.1", "srvctl-add-master.1", "srvctl-drain.1", "srvd.8"] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate")), "no page for the hidden command: {names:?}");
        let srvctl = std::fs::read_to_string(dir.path().join("srvctl.1")).unwrap();
        assert!(srvctl.starts_with(".ie") || srvctl.contains(".TH srvctl 1"), "roff header: {}", &srvctl[..80.min(srvctl.len())]);
        assert!(srvctl.contains("socket"), "srvctl(1) documents --socket");
        let srvd = std::fs::read_to_string(dir.path().join("srvd.8")).unwrap();
        assert!(srvd.contains(".TH srvd 8") && srvd.contains("log\\-format"), "srvd(8): {srvd}");
    }
}
