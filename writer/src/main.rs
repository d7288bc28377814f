//! `set-backend`: parses arguments, sets up logging, binds the listeners and calls
//! [`set_backend_writer::run`]; the operator commands go to [`cli::run_command`].

use std::process::ExitCode;

use clap::Parser;
use set_backend_writer::auth::{resolve_token, TokenSource};
use set_backend_writer::cli::{self, Cli, Command, LogFormat, ServeArgs};
use set_backend_writer::{listen, run, Config};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("set-backend: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format);
            match rt.block_on(serve(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        cmd => match rt.block_on(cli::run_command(cmd)) {
            Ok(code) => ExitCode::from(code as u8),
            Err(e) => {
                eprintln!("set-backend: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    // Installed first, so a SIGTERM during start-up is a clean stop too.
    let shutdown = shutdown_signal()?;
    let table_dir = args.table_path().parent().map(|p| p.to_path_buf());
    let store_dir = args.store_path().parent().map(|p| p.to_path_buf());
    for dir in [Some(args.data_dir.clone()), table_dir, store_dir]
        .into_iter()
        .flatten()
    {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    let token_path = args.token_path();
    let (token, source) = resolve_token(std::env::var("API_TOKEN").ok(), &token_path)?;
    match source {
        TokenSource::Generated => tracing::warn!(
            "generated an API token and stored it in {} (mode 0600); clients send it as \
             Authorization: Bearer <token>",
            token_path.display()
        ),
        TokenSource::File => tracing::info!(file = %token_path.display(), "API token loaded"),
        TokenSource::Env => tracing::info!("API token taken from API_TOKEN"),
    }

    let mut listeners = Vec::new();
    if let Some(path) = args.socket_path() {
        listeners.push(listen::bind_unix(
            &path,
            args.socket_mode,
            args.socket_group.as_deref(),
        )?);
    }
    if let Some(addr) = args.listen {
        listeners.push(listen::bind_tcp(addr, args.allow_remote)?);
    }

    let mut config = Config::new(args.store_path(), args.table_path(), token);
    config.max_batch_bytes = args.max_batch_bytes;
    config.store_cache_bytes = args.store_cache_mib.saturating_mul(1024 * 1024);
    config.ip_backends_only = args.backends == cli::BackendKinds::Ip;
    config.domain = args.domain.clone();
    config.fleet = args.etcd.config(&args.default_node_name())?;
    let result = run(config, listeners, shutdown).await;
    if let Some(path) = args.socket_path() {
        let _ = std::fs::remove_file(path);
    }
    Ok(result?)
}

/// Installs the handlers now; the future resolves at the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
