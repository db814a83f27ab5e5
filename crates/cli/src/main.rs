//! The `keyplane` binary: `serve` runs the server; `admin` runs the key ceremony and seal controls;
//! `audit` verifies and exports the audit trail; `vault`, `key`, `keystore`, `template` and
//! `access` call a running server through `keyplane-client`.

mod access;
mod admin;
mod audit;
mod audit_stream;
mod config;
mod migrate;
mod remote;
mod serve;
mod tls;
mod tokens;

use clap::{Parser, Subcommand};

/// The server allocates many small JSON values per request across threads; mimalloc serves
/// them with far less contention than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keyplane",
    version,
    about = "Keyplane: a self-hosted key orchestrator speaking the UKO v4 API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (zero configuration: SQLite in ./keyplane-data, dev seal, 127.0.0.1:8080).
    Serve(Box<config::ServeArgs>),
    /// Operate the seal and the master key.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Verify and export the audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Manage principals and their API keys.
    #[command(subcommand)]
    Access(access::AccessCommand),
    /// Vaults: list, get, create, delete.
    Vault {
        #[command(flatten)]
        connect: remote::ConnectArgs,
        #[command(subcommand)]
        command: remote::vaults::VaultCommand,
    },
    /// Managed keys: create, lifecycle, versions, status in keystores.
    Key {
        #[command(flatten)]
        connect: remote::ConnectArgs,
        #[command(subcommand)]
        command: remote::keys::KeyCommand,
    },
    /// Keystores: list, get, status, disconnect.
    Keystore {
        #[command(flatten)]
        connect: remote::ConnectArgs,
        #[command(subcommand)]
        command: remote::keystores::KeystoreCommand,
    },
    /// Requests under dual control: list, get, approve, reject.
    Approval {
        #[command(flatten)]
        connect: remote::ConnectArgs,
        #[command(subcommand)]
        command: remote::approvals::ApprovalCommand,
    },
    /// Check an API key against a server and keep it in a profile (`--profile NAME`, default
    /// `default`); the key is read from standard input unless given.
    Login {
        #[command(flatten)]
        connect: remote::ConnectArgs,
    },
    /// Print a shell completion script, e.g. `keyplane completions bash > /etc/bash_completion.d/keyplane`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from these commands' definitions.
    #[command(hide = true)]
    Manual,
    /// Move an estate into Keyplane from another key orchestrator.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Key templates: list, get, create.
    Template {
        #[command(flatten)]
        connect: remote::ConnectArgs,
        #[command(subcommand)]
        command: remote::templates::TemplateCommand,
    },
}

/// Runs a client verb; its failure is printed and becomes a documented exit code.
fn run_client(work: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(work);
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(remote::exit_code(&e));
    }
    Ok(())
}

/// Logs go to standard error, filtered by `KEYPLANE_LOG`, as text or, with
/// `KEYPLANE_LOG_FORMAT=json`, one JSON object per line.
fn init_logging() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYPLANE_LOG")
        .unwrap_or_else(|_| "info".into());
    let format = std::env::var("KEYPLANE_LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format.trim() {
        "" | "text" => builder.init(),
        "json" => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        other => anyhow::bail!("KEYPLANE_LOG_FORMAT '{other}' is not text or json"),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One TLS provider for every client and server in the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    init_logging()?;
    match cli.command {
        Command::Serve(args) => {
            let config = config::Config::resolve(*args)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve::run(config))
        }
        Command::Admin(command) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(admin::run(command)),
        Command::Audit(audit::AuditCommand::Events { connect, filters }) => {
            run_client(remote::audit_events::events(&connect, filters))
        }
        Command::Audit(audit::AuditCommand::Chain { connect }) => {
            run_client(remote::audit_events::chain(&connect))
        }
        Command::Audit(command) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(audit::run(command)),
        Command::Access(command) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(access::run(command)),
        Command::Vault { connect, command } => run_client(remote::vaults::run(&connect, command)),
        Command::Key { connect, command } => run_client(remote::keys::run(&connect, command)),
        Command::Keystore { connect, command } => {
            run_client(remote::keystores::run(&connect, command))
        }
        Command::Template { connect, command } => {
            run_client(remote::templates::run(&connect, command))
        }
        Command::Login { connect } => run_client(remote::login(&connect)),
        Command::Migrate(command) => run_client(migrate::run(command)),
        Command::Approval { connect, command } => {
            run_client(remote::approvals::run(&connect, command))
        }
        Command::Manual => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "keyplane", &mut std::io::stdout());
            Ok(())
        }
    }
}
