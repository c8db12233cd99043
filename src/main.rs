use anyhow::Context;
use clap::Parser;
use codekraft::app::{self, AppBuilder};
use codekraft::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A `.env` file is optional; real environment variables win over it.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    codekraft::telemetry::init(cli.config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::PrintSchema => {
            print!("{}", codekraft::graphql::schema_sdl());
            Ok(())
        }
        Command::Migrate => {
            let metrics = Default::default();
            let db = app::connect_database(&cli.config, &metrics).await?;
            app::migrate(&db).await?;
            tracing::info!("migrations are up to date");
            Ok(())
        }
        Command::Serve => {
            let bind = cli.config.bind;
            let state = AppBuilder::new(cli.config).build().await?;
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("binding {bind}"))?;
            let server = app::start(state, listener).await?;
            tracing::info!("open http://{} (GraphiQL at /graphiql)", server.addr);
            shutdown_signal().await;
            tracing::info!("shutting down");
            // Open WebSockets would hold a graceful shutdown forever: give them a moment.
            match tokio::time::timeout(std::time::Duration::from_secs(5), server.shutdown()).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("connections still open after 5 s; exiting");
                    Ok(())
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate.recv() => {}
    }
}
