//! The `shoal` command: serve (the default), migrate, and administration.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use shoal::auth::{random_token, PasswordHashing};
use shoal::config::{Secret, Settings};
use shoal::domain::EmailAddress;
use shoal::store::Store;
use shoal::Application;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "shoal", version, about = "Shoal: a real-time CRM served by one binary.", long_about = None)]
struct Cli {
    #[command(flatten)]
    opts: ServerOpts,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Where the server's settings come from, for the commands that open the store or
/// serve (not for `watch`, which is a client).
#[derive(Args, Clone, Default)]
struct ServerOpts {
    /// A TOML settings file; its values override the defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default 127.0.0.1; env SHOAL_HOST].
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on [default 8080; env SHOAL_PORT].
    #[arg(long)]
    port: Option<u16>,
    /// postgres://… to use PostgreSQL; unset uses the embedded SQLite store [env SHOAL_DATABASE_URL].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Directory of the embedded store [default ./data; env SHOAL_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl ServerOpts {
    /// These flags, with those given after the subcommand winning.
    fn and(&self, sub: &ServerOpts) -> ServerOpts {
        ServerOpts {
            config: sub.config.clone().or_else(|| self.config.clone()),
            host: sub.host.clone().or_else(|| self.host.clone()),
            port: sub.port.or(self.port),
            database_url: sub.database_url.clone().or_else(|| self.database_url.clone()),
            data_dir: sub.data_dir.clone().or_else(|| self.data_dir.clone()),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServerOpts),
    /// Apply database migrations and exit.
    Migrate(ServerOpts),
    /// Follow a board live and print its events, one per line.
    Watch {
        /// The pipeline whose board to follow.
        #[arg(long, value_name = "PIPELINE_ID")]
        board: String,
        /// The server's address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An access token or API key [env SHOAL_TOKEN].
        #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
        token: String,
        /// Print the protocol's JSON frames as they come.
        #[arg(long)]
        raw: bool,
        /// Reconnection attempts in a row before giving up (with back-off: 1, 2, 4 … 30 s).
        #[arg(long, default_value_t = 10)]
        retries: u32,
    },
    /// Write a consistent copy of the embedded store to FILE, while the server runs.
    Backup {
        /// Where to write the copy (a new file).
        file: PathBuf,
        #[command(flatten)]
        opts: ServerOpts,
    },
    /// Put a backup in place of the embedded store; the server must be stopped. The
    /// store it replaces is kept beside it, renamed.
    Restore {
        /// A file written by `shoal backup`.
        file: PathBuf,
        #[command(flatten)]
        opts: ServerOpts,
    },
    /// Administration tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a workspace and its owner.
    CreateWorkspace {
        /// The workspace's name.
        #[arg(long)]
        name: String,
        /// The owner's e-mail address (the login).
        #[arg(long)]
        email: String,
        /// The owner's display name [default: the part of the e-mail before '@'].
        #[arg(long)]
        owner_name: Option<String>,
        /// Read the owner's password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        opts: ServerOpts,
    },
}

fn settings(cli: &ServerOpts) -> anyhow::Result<Settings> {
    let mut s = Settings::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(h) = &cli.host {
        s.host = h.clone();
    }
    if let Some(p) = cli.port {
        s.port = p;
    }
    if let Some(u) = &cli.database_url {
        s.database_url = Some(Secret::new(u.clone()));
    }
    if let Some(d) = &cli.data_dir {
        s.data_dir = d.clone();
    }
    s.validate()?;
    Ok(s)
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("SHOAL_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let cli = Cli::parse();
    let top = &cli.opts;
    match cli.command.unwrap_or_else(|| Command::Serve(ServerOpts::default())) {
        Command::Serve(opts) => {
            let settings = settings(&top.and(&opts))?;
            let (host, embedded) = (settings.host.clone(), settings.is_embedded());
            let app = Application::build(settings).await?;
            tracing::info!(url = %format!("http://{host}:{}", app.port()), store = if embedded { "sqlite (embedded)" } else { "external" }, "shoal is listening: open the url in a browser");
            let handle = app.handle();
            actix_web::rt::spawn(async move {
                let signal = shutdown_signal().await;
                tracing::info!(signal, "shutting down: finishing the requests in flight");
                handle.stop(true).await;
            });
            app.run_until_stopped().await?;
            tracing::info!("stopped");
        }
        Command::Watch {
            board,
            url,
            token,
            raw,
            retries,
        } => {
            let watch = shoal::watch::Watch {
                url: &url,
                token: &token,
                pipeline: &board,
                raw,
                retries,
            };
            shoal::watch::watch(watch).await?;
        }
        Command::Backup { file, opts } => {
            let settings = settings(&top.and(&opts))?;
            let store = open_store(&settings).await?;
            let done = store.backup_to(&file).await;
            store.close().await;
            done?;
            println!("backup written to {}", file.display());
        }
        Command::Restore { file, opts } => {
            let settings = settings(&top.and(&opts))?;
            anyhow::ensure!(
                settings.database_url.is_none(),
                "shoal restore replaces the embedded store in data_dir; restore PostgreSQL with pg_restore (docs/operations.md)"
            );
            match Store::restore(&settings.data_dir, &file).await? {
                Some(kept) => println!("restored {}; the store it replaced is kept as {}", file.display(), kept.display()),
                None => println!("restored {}", file.display()),
            }
        }
        Command::Migrate(opts) => {
            let settings = settings(&top.and(&opts))?;
            let store = open_store(&settings).await?;
            store.migrate().await?;
            store.close().await;
            println!("migrations applied ({})", store.backend().name());
        }
        Command::Admin {
            command:
                AdminCommand::CreateWorkspace {
                    name,
                    email,
                    owner_name,
                    password_stdin,
                    opts,
                },
        } => {
            let settings = settings(&top.and(&opts))?;
            let email = EmailAddress::parse(&email).map_err(anyhow::Error::msg)?;
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("cannot read the password from stdin")?;
                let pw = line.trim_end_matches(['\r', '\n']).to_string();
                anyhow::ensure!(pw.chars().count() >= 10, "the password must be at least 10 characters");
                (pw, false)
            } else {
                (random_token()?, true)
            };
            let store = open_store(&settings).await?;
            store.migrate().await?;
            let hash = PasswordHashing::new(settings.argon2_memory_kib, settings.argon2_iterations)?.hash(&password)?;
            let owner = owner_name.unwrap_or_else(|| email.as_str().split('@').next().unwrap_or("owner").to_string());
            let (ws, user) = store
                .create_workspace(&name, email.as_str(), &owner, &hash)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            store.close().await;
            println!("workspace {ws} created; owner {email} (user {user})");
            if generated {
                println!("password (shown once): {password}");
            }
        }
    }
    Ok(())
}

async fn open_store(s: &Settings) -> anyhow::Result<Store> {
    Store::connect(
        s.database_url.as_ref().map(|u| u.expose()),
        &s.data_dir,
        s.database_max_connections,
        s.acquire_timeout(),
    )
    .await
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM, which stop the server the same way; returns the
/// signal's name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
