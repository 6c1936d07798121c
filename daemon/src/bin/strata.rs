//! `strata`: the command-line client for stratad.

fn main() -> std::process::ExitCode {
    strata_daemon::cli::main()
}
