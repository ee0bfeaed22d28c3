//! `nbgate`: parse the command line, set up logging, dispatch. Nothing else.

use std::process::ExitCode;

use clap::Parser;
use nbgate::cli::{Cli, Command};
use nbgate::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = cli.command.config_args();
    let config = match Config::load(cli.config.as_deref(), args.pairs()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nbgate: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    nbgate::telemetry::init(config.log_format);
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nbgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            // A task, not block_on's own future: with worker threads, every new connection
            // otherwise had the worker that polls the sockets wake block_on's thread (a futex
            // wake, then a wait for that thread's turn on the same CPU) before its first byte.
            Command::Serve(_) => tokio::spawn(nbgate::app::serve(config))
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("the gateway task ended abnormally: {e}"))),
            Command::Check(_) => nbgate::check::run(&config).await,
            Command::Key { action, .. } => nbgate::admin::key(&config, action).await,
            Command::Volume { action, .. } => nbgate::admin::volume(&config, action).await,
            Command::Pool { action, .. } => nbgate::admin::pool(&config, action).await,
            Command::User { action, .. } => nbgate::admin::user(&config, action).await,
            Command::Token { action, .. } => nbgate::admin::token(&config, action).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // The error policy: anyhow at the edge, the whole cause chain once.
            eprintln!("nbgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One thread when the process may use one CPU (`taskset`, a cpuset, a quota): then a
/// work-stealing scheduler only adds cost. Otherwise a worker per CPU. bcrypt and
/// file work run on the blocking pool either way.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Runtime::new()
    }
}
