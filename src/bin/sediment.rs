//! The `sediment` binary: parse the command line, install logging, run the command
//! (every command is a library call, see `sediment::cli`), map its error to an exit code.

use std::process::ExitCode;

use clap::Parser;
use sediment::cli::{Cli, exit_code, run};

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`sediment scan ... | head`) like other Unix tools.
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    sediment::service::install_crypto_provider();
    install_tracing(cli.verbosity());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn install_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,sediment=info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
