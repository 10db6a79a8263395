//! `punctual serve`: runs a node (the engine, the HTTP API, the webhook executor) until SIGTERM
//! or SIGINT, then stops it gracefully and exits 0.
//!
//! Glue only: the configuration is `punctual_server::config`, the node `punctual_server::Node`,
//! the store's opening `punctual_server::store_url`. This module installs the log subscriber and
//! waits for the signal.

use std::sync::Arc;

use anyhow::Context;
use punctual_server::Node;
use punctual_server::config::{LogFormat, ServeArgs, ServeConfig};
use punctual_server::store_url::{self, PostgresSettings, SkewedClock, StoreUrl};
use tracing_subscriber::EnvFilter;

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::load(&args)?;
    install_logs(config.log_format, &config.log_level)?;
    let store: StoreUrl = config
        .store
        .parse()
        .with_context(|| format!("invalid store {:?}", config.store))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut settings = PostgresSettings {
            schema: config.schema.clone(),
            ..PostgresSettings::default()
        };
        if config.test_clock_skew_ms != 0 {
            tracing::warn!(
                skew_ms = config.test_clock_skew_ms,
                "TEST ONLY: this node's own clock is skewed; the database's clock corrects it"
            );
            settings.local_clock = Arc::new(SkewedClock::from_millis(config.test_clock_skew_ms));
        }
        let opened = store_url::open(&store, &settings).await?;
        let node = Node::start(
            opened.store.clone(),
            opened.clock.clone(),
            config.node.clone(),
        )
        .await?;
        if config.node.insecure_no_auth {
            tracing::warn!(
                "authentication is OFF (--insecure-no-auth): every request is served as an admin"
            );
        }
        if config.node.webhook_secrets.is_empty() {
            tracing::warn!("no webhook signing secret is configured: webhooks are sent unsigned");
        }
        let signal = shutdown_signal().await?;
        tracing::info!(
            signal,
            "stopping: no new requests; answering those in flight, then stopping the engine"
        );
        node.stop().await;
        opened.close().await;
        Ok(())
    })
}

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

/// Logs to stderr as text or JSON lines, filtered by `RUST_LOG` when set, else by `level`.
fn install_logs(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(text) if !text.is_empty() => EnvFilter::try_new(text).context("invalid RUST_LOG")?,
        _ => EnvFilter::try_new(level).with_context(|| format!("invalid log_level {level:?}"))?,
    };
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("installing the log subscriber: {error}"))
}
