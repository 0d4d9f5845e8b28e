//! The `atelier` binary: no arguments opens the studio; subcommands (`src/cli/`) run the same
//! engine headless.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
