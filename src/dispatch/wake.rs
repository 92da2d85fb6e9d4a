//! Waking the dispatcher: PostgreSQL `LISTEN rota_task` on one dedicated connection
//! (tokio-postgres, event-driven: no sleep loop adding latency), plus in-process wake-ups.
//!
//! The listener subscribes *before* it reports itself ready, and wakes the dispatcher after every
//! (re)connection, so a notification sent while it was away costs at most one extra read — never
//! a lost row (the poll interval is the final backstop).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

/// Keep a `LISTEN rota_task` connection to `url` open until `shutdown`, calling `wake` on every
/// notification and after every (re)connection.
pub async fn listen(url: String, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match connect_and_listen(&url, &wake, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "NOTIFY listener lost its connection; the poll interval covers the gap");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ListenError {
    #[error(transparent)]
    Pg(#[from] tokio_postgres::Error),
    #[error("the server closed the connection")]
    Closed,
}

async fn connect_and_listen(url: &str, wake: &Notify, shutdown: &CancellationToken) -> Result<(), ListenError> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // The connection must be polled for LISTEN to complete: drive both together.
    let listen = client.batch_execute("LISTEN rota_task");
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            done = &mut listen, if !listening => {
                done?;
                listening = true;
                tracing::debug!("listening for rota_task notifications");
                wake.notify_one();
            }
            msg = messages.next() => match msg {
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ListenError::Closed),
            }
        }
    }
}
