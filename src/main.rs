//! The `mailbox-gateway` binary: parses the command line, loads configuration, starts logging and runs the
//! gateway or the simulator from the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use exchange_simulator::{Simulator, SimulatorConfig, DEMO};
use mailbox_gateway::cli;
use mailbox_gateway::config::{
    keys, AuditLogTarget, Config, CredentialConfig, ImportHosts, LogFormat, LoggingSettings,
    Sources, TenantConfig,
};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Puts raw FTS item streams back into Exchange Online mailboxes through Microsoft Graph.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the gateway.
    Serve {
        /// A TOML file of settings (the same keys as the environment variables; the environment wins).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides MAILBOX_GATEWAY_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Runs against a built-in Exchange Online simulator instead of Microsoft Graph.
        #[arg(long)]
        simulate: bool,
    },
    /// Runs the Exchange Online simulator alone and prints its demo tenant's credentials.
    Simulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: SocketAddr,
    },
    /// Restores item streams (.fts files, directories of them, folder-export tars) through a gateway.
    Restore(cli::restore::Args),
    /// Exports a folder through a gateway into a tar file or a directory.
    Export(cli::export::Args),
    /// Decodes an item stream and prints what it holds.
    Inspect(cli::inspect::Args),
    /// Writes a well-formed sample item stream.
    Sample(cli::sample::Args),
}

/// mimalloc: the gateway allocates and frees many small buffers per request, which per-thread free lists
/// suit (the 4 KiB benchmark profile spent about a tenth of the gateway's CPU in glibc's malloc and free).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The sample item shipped with the repository.
const SAMPLE_ITEM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/welcome.fts");

#[tokio::main]
async fn main() -> ExitCode {
    let command = parse_command_line();
    let outcome = match command {
        Command::Serve {
            config,
            listen,
            simulate,
        } => serve(config.as_deref(), listen, simulate).await,
        Command::Simulator { listen } => simulator(listen).await,
        Command::Restore(args) => return cli::restore::run(args).await,
        Command::Export(args) => return cli::export::run(args).await,
        Command::Inspect(args) => return cli::inspect::run(args).await,
        Command::Sample(args) => return cli::sample::run(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The message and its causes, without a backtrace: these are configuration problems for a
            // person to fix, not bugs.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line, with `serve --help` listing every setting from the registry.
fn parse_command_line() -> Command {
    let settings: Vec<String> = mailbox_gateway::config::KEYS
        .iter()
        .map(|(key, meaning)| format!("  {key:<46} {meaning}"))
        .collect();
    let command = Cli::command().mut_subcommand("serve", |serve| {
        serve.after_help(format!(
            "Settings (environment variables, or keys of the --config TOML file; the environment \
             wins). Defaults and details: docs/configuration.md\n\n{}",
            settings.join("\n")
        ))
    });
    Cli::from_arg_matches(&command.get_matches())
        .unwrap_or_else(|error| error.exit())
        .command
}

async fn serve(
    config_file: Option<&Path>,
    listen: Option<SocketAddr>,
    simulate: bool,
) -> anyhow::Result<()> {
    let mut sources = Sources::from_process(config_file)?;
    if let Some(listen) = listen {
        sources.set(keys::LISTEN, listen.to_string());
    }
    // Held until serving ends, so the audit writer flushes every line before the process exits.
    let _log_writers = init_logging(&LoggingSettings::load(&sources)?)?;
    let simulator = if simulate {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Some(Simulator::start(listener, SimulatorConfig::default()).await?)
    } else {
        None
    };
    let tenant = simulator.as_ref().map(demo_tenant).transpose()?;
    let config = Config::load(&sources, tenant)?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (MAILBOX_GATEWAY_LISTEN)",
            config.listen
        )
    })?;
    if let Some(simulator) = &simulator {
        let address = listener.local_addr()?;
        println!(
            "mailbox-gateway on http://{address}, against the built-in Exchange Online simulator at {}.\n\
             Import the sample item into the demo mailbox {}:\n\n  \
             curl -sS -X POST -H 'Content-Type: application/octet-stream' --data-binary @{} \
             http://{address}/v1/mailboxes/{}/folders/inbox/items\n",
            simulator.base_url(),
            DEMO.mailbox_address,
            sample_path(),
            DEMO.mailbox_address,
        );
    }
    Ok(mailbox_gateway::app::run(listener, config, shutdown_signal()).await?)
}

/// The simulator's demo tenant, as the gateway's tenant.
fn demo_tenant(simulator: &Simulator) -> anyhow::Result<TenantConfig> {
    Ok(TenantConfig {
        tenant_id: DEMO.tenant_id.to_owned(),
        client_id: DEMO.client_id.to_owned(),
        credential: CredentialConfig::Secret(SecretString::from(DEMO.client_secret.to_owned())),
        authority_host: simulator.base_url().parse()?,
        graph_url: simulator.graph_url().parse()?,
        import_hosts: ImportHosts::parse(&simulator.base_url()).map_err(anyhow::Error::msg)?,
    })
}

async fn simulator(listen: SocketAddr) -> anyhow::Result<()> {
    let _log_writers = init_logging(&LoggingSettings::load(&Sources::from_process(None)?)?)?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let simulator = Simulator::start(listener, SimulatorConfig::default()).await?;
    let base = simulator.base_url();
    println!(
        "Exchange Online simulator on {base}.\n\
         Demo tenant (the client secret is the simulator's own, public by design):\n\n  \
         AZURE_TENANT_ID={}\n  AZURE_CLIENT_ID={}\n  AZURE_CLIENT_SECRET={}\n  \
         AZURE_AUTHORITY_HOST={base}\n  MAILBOX_GATEWAY_GRAPH_URL={}\n  MAILBOX_GATEWAY_IMPORT_HOSTS={base}\n\n\
         Demo mailbox: {} ({})",
        DEMO.tenant_id,
        DEMO.client_id,
        DEMO.client_secret,
        simulator.graph_url(),
        DEMO.mailbox_address,
        DEMO.mailbox_id,
    );
    shutdown_signal().await;
    Ok(())
}

fn sample_path() -> String {
    if Path::new(SAMPLE_ITEM).exists() {
        SAMPLE_ITEM.to_owned()
    } else {
        "samples/welcome.fts".to_owned()
    }
}

/// Logs to stderr, human-readable (coloured only on a terminal) or JSON with
/// MAILBOX_GATEWAY_LOG_FORMAT=json; level from RUST_LOG (default info). Both streams are written by
/// threads of their own (`batch_writer`). Audit events (target `audit`) go apart, one JSON object per
/// line, to MAILBOX_GATEWAY_AUDIT_LOG: `stdout` (the default), `stderr`, `off`, or a file to append to.
fn init_logging(settings: &LoggingSettings) -> anyhow::Result<LogGuards> {
    use std::io::IsTerminal;
    let mut guards = LogGuards::default();
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, Layer};

    let is_audit = |meta: &tracing::Metadata<'_>| meta.target() == "audit";
    let level = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Through a batching writer too, so a worker thread never blocks on a slow stderr pipe (journald,
    // a container runtime) and makes no syscall per line.
    let (stderr, guard) = mailbox_gateway::batch_writer::spawn(Box::new(std::io::stderr()), "log");
    guards.writers.push(guard);
    let debug_log = match settings.format {
        LogFormat::Json => fmt::layer().json().with_writer(stderr).boxed(),
        // Colour codes only where a person reads them: a file or the journal gets plain text.
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(stderr)
            .boxed(),
    }
    .with_filter(level.and(filter_fn(move |meta| !is_audit(meta))));
    let audit_target: Option<Box<dyn std::io::Write + Send>> = match &settings.audit {
        AuditLogTarget::Stdout => Some(Box::new(std::io::stdout())),
        AuditLogTarget::Stderr => Some(Box::new(std::io::stderr())),
        AuditLogTarget::Off => None,
        AuditLogTarget::File(path) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| {
                    format!(
                        "cannot open {} {} for appending",
                        keys::AUDIT_LOG,
                        path.display()
                    )
                })?,
        )),
    };
    // Audit lines are handed to a thread of their own without a syscall, and that thread writes them in
    // batches (at most about 20 ms later), so a request never waits on the disk or pipe. Not lossy: when
    // that thread falls behind, requests wait rather than an audit line being dropped.
    let audit_writer = audit_target.map(|target| {
        let (writer, guard) = mailbox_gateway::batch_writer::spawn(target, "audit-log");
        guards.writers.push(guard);
        writer
    });
    let audit_log = audit_writer.map(|writer| {
        mailbox_gateway::audit_log::AuditLayer::new(writer).with_filter(filter_fn(is_audit))
    });
    #[cfg(feature = "otel")]
    let trace_export = otel::layer().map(|(layer, provider)| {
        guards.tracer = Some(provider);
        layer
    });
    #[cfg(not(feature = "otel"))]
    let trace_export: Option<tracing_subscriber::layer::Identity> = None;
    tracing_subscriber::registry()
        .with(debug_log)
        .with(audit_log)
        .with(trace_export)
        .init();
    Ok(guards)
}

/// What must live until `main` returns: the log writers' threads (so every line is flushed) and, with
/// the `otel` feature, the trace exporter (so the last spans are sent).
#[derive(Default)]
struct LogGuards {
    writers: Vec<mailbox_gateway::batch_writer::BatchGuard>,
    #[cfg(feature = "otel")]
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

#[cfg(feature = "otel")]
impl Drop for LogGuards {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer.take() {
            provider.shutdown().ok();
        }
    }
}

/// OpenTelemetry trace export over OTLP/HTTP (cargo feature `otel`, off by default).
#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
    use tracing_subscriber::registry::LookupSpan;

    /// A layer exporting spans to `OTEL_EXPORTER_OTLP_ENDPOINT` (and the other standard `OTEL_*`
    /// variables), or `None` when no endpoint is set.
    pub fn layer<S>() -> Option<(
        tracing_opentelemetry::OpenTelemetryLayer<S, Tracer>,
        SdkTracerProvider,
    )>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT")?;
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => exporter,
            Err(error) => {
                eprintln!("warning: OpenTelemetry export is off: {error}");
                return None;
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("mailbox-gateway")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("mailbox-gateway");
        Some((tracing_opentelemetry::layer().with_tracer(tracer), provider))
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
