//! The one start-up seam: [`Application::build`] opens the store, applies migrations,
//! binds the listener (port 0 picks a free port, for tests) and assembles the server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tokio::sync::Semaphore;

use crate::app::AppState;
use crate::auth::{random_token, PasswordHashing, TokenSigner};
use crate::config::Settings;
use crate::http;
use crate::store::Store;

/// How many CSV imports may run at once on a node.
const IMPORT_SLOTS: usize = 2;

pub struct Application {
    port: u16,
    server: Server,
    store: Store,
    /// The thread the topic actors run on; stopped with the server.
    actors: actix::Arbiter,
    /// The persister's thread, likewise.
    writer: actix::Arbiter,
    /// Workers (the timer scheduler), stopped with the server.
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// Tells the workers to stop.
    stop_workers: tokio::sync::watch::Sender<bool>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let store = Store::connect(
            settings.database_url.as_ref().map(|s| s.expose()),
            &settings.data_dir,
            settings.database_max_connections,
            settings.acquire_timeout(),
        )
        .await?;
        store.migrate().await?;
        let interrupted = store.fail_interrupted_imports().await?;
        if interrupted > 0 {
            tracing::warn!(jobs = interrupted, "marked imports interrupted by the last stop as failed");
        }
        let secret = match &settings.jwt_secret {
            Some(s) => s.expose().to_string(),
            None => store.server_secret("jwt_secret").await?,
        };
        let passwords = PasswordHashing::new(settings.argon2_memory_kib, settings.argon2_iterations)?;
        let dummy_hash = passwords.hash(&random_token()?)?;
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let workers = match settings.http_workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            n => n,
        };
        // Topic actors live on their own arbiter (thread), apart from HTTP workers, and
        // the persister on another: a batch's round trips to the store are the path
        // every write waits on, and do not queue behind the actors' fan-out.
        let actors = actix::Arbiter::new();
        let writer = actix::Arbiter::new();
        let persister = {
            let store = store.clone();
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            writer.spawn(async move {
                let _ = tx.send(crate::actors::Persister::start(store));
            });
            rx.recv().context("the persister's thread did not start")?
        };
        let directory = crate::actors::Directory::start(
            store.clone(),
            actors.handle(),
            persister,
            Duration::from_secs(settings.passivate_after_secs),
        );
        let bus = match &settings.redis_url {
            Some(url) => {
                let advertise_url = match &settings.advertise_url {
                    Some(u) => u.clone(),
                    None if listener.local_addr()?.ip().is_unspecified() => {
                        anyhow::bail!("set advertise_url: other nodes cannot reach a node listening on {}", settings.host)
                    }
                    None => format!("http://{}", listener.local_addr()?),
                };
                let membership = crate::bus::Membership {
                    url: url.expose(),
                    channel: &settings.redis_channel,
                    advertise_url: &advertise_url,
                    lease_ttl: settings.lease_ttl(),
                };
                Some(crate::bus::RedisBus::start(membership, directory.clone(), &actors.handle())?)
            }
            None => None,
        };
        directory.listen(&store, bus.clone());
        let state = web::Data::new(AppState {
            directory,
            bus,
            store: store.clone(),
            tokens: TokenSigner::new(&secret),
            passwords: crate::auth::PasswordPool::start(passwords)?,
            import_slots: Arc::new(Semaphore::new(IMPORT_SLOTS)),
            dummy_hash,
            settings,
            connections: Default::default(),
            clock: Default::default(),
            inbox_tokens: Default::default(),
            mail_changed: Default::default(),
            mail_queued: Default::default(),
        });
        let site = web::Data::new(http::Site::load(state.settings.web_dir.as_deref())?);
        let (stop_workers, stop) = tokio::sync::watch::channel(false);
        let mut background = vec![actix_web::rt::spawn(crate::workers::timers::run(
            state.clone().into_inner(),
            stop.clone(),
        ))];
        if state.settings.mail_workers {
            background.push(actix_web::rt::spawn(crate::workers::mail_sync::run(
                state.clone().into_inner(),
                stop.clone(),
            )));
            background.push(actix_web::rt::spawn(crate::workers::mail_send::run(
                state.clone().into_inner(),
                stop,
            )));
        }
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(site.clone())
                .wrap(from_fn(http::uniform_errors))
                .wrap(from_fn(access_log))
                // The two adapters over the application: the WebSocket endpoint, then
                // every REST route (whose catch-all answers `not_found`).
                .configure(crate::ws::configure)
                .configure(http::configure)
        })
        .workers(workers)
        // Events are small frames sent as they happen: waiting to coalesce them (Nagle)
        // against the client's delayed ACKs stalls delivery by up to 40 ms.
        .tcp_nodelay(true)
        // Signals are the binary's to handle (see `main`): actix would stop at once on
        // Ctrl-C, dropping requests in flight, where SIGTERM drains them.
        .disable_signals()
        .listen(listener)?
        .run();
        Ok(Application {
            port,
            server,
            store,
            actors,
            writer,
            workers: background,
            stop_workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server: `stop(true)` drains requests in flight first.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped through [`Application::handle`], then drains in-flight
    /// requests and closes the store.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        // Workers finish what they are doing (a write in flight is kept) and stop.
        let _ = self.stop_workers.send(true);
        for w in self.workers {
            let _ = w.await;
        }
        self.actors.stop();
        self.writer.stop();
        self.store.close().await;
        result.context("the HTTP server failed")
    }
}

async fn access_log(req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.path().to_string());
    let res = next.call(req).await?;
    tracing::info!(%method, %path, status = res.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    Ok(res)
}
