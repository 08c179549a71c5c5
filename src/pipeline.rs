//! The commands: source → staging tree → guest fixes → disk → output.

use crate::cli::{Cli, Command};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
}

pub fn run(cli: &Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Pull(_) | Command::Build(_) | Command::Inspect { .. } | Command::Export { .. } => {
            Err(Error::Usage("this command is being wired".into()))
        }
    }
}
