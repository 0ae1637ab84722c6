//! Keeping the index in step with revocations made elsewhere.
//!
//! Two channels, because pub/sub is at-most-once: pushed messages apply a
//! revocation within milliseconds, and the store's revocation log, polled
//! every `revocation_poll` (default 250 ms), replays anything a push missed.
//! With a shared store (cluster mode) the index is trusted only while the
//! subscription is live and the last poll succeeded; when either fails, the
//! verifier checks every request against the store (or fails closed) until
//! it has resubscribed and caught up. With SQLite there is no push channel
//! and the poll alone picks up revocations made by the offline CLI.
//!
//! Every instance acknowledges each pushed revocation once applied, by
//! counting down the revocation's counter in the store; the store announces
//! the last acknowledgement on the channel, and the revoking instance waits
//! for that (bounded by the poll-based guarantee), so that when a revoke call
//! returns, every instance already refuses the token. Each instance gets two
//! messages per revocation, however many instances there are.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Verifier;
use crate::store::Pushed;

/// Runs until `shutdown`.
pub async fn run(verifier: Arc<Verifier>, poll: Duration, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let subscribed = tokio::select! {
            s = verifier.store().subscribe() => s,
            _ = shutdown.cancelled() => return,
        };
        let mut stream = match subscribed {
            Ok(None) => return poll_only(&verifier, poll, shutdown).await,
            Ok(Some(stream)) => stream,
            Err(e) => {
                verifier.distrust();
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot subscribe to revocations");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        // Subscribed first, then caught up: nothing falls in between.
        match verifier.poll_revocations().await {
            Ok(_) => verifier.confirm_in_sync(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the revocation log after subscribing");
                verifier.distrust();
                continue;
            }
        }
        backoff = Duration::from_millis(50);
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(Pushed::Revoked(rev)) => {
                        verifier.apply_revocation(&rev.hash);
                        // Acknowledge off the loop so a slow publish never
                        // delays the next revocation.
                        let store = Arc::clone(verifier.store());
                        tokio::spawn(async move {
                            if let Err(e) = store.acknowledge(rev.seq).await {
                                tracing::debug!(error = %e, seq = rev.seq, "could not acknowledge a revocation");
                            }
                        });
                    }
                    Some(Pushed::Applied { seq }) => verifier.record_ack(seq),
                    None => {
                        tracing::warn!("revocation subscription dropped; resubscribing");
                        break;
                    }
                },
                _ = tick.tick() => match verifier.poll_revocations().await {
                    Ok(_) => verifier.confirm_in_sync(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot poll the revocation log");
                        break;
                    }
                },
                _ = shutdown.cancelled() => return,
            }
        }
        verifier.distrust();
    }
}

async fn poll_only(verifier: &Verifier, poll: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => match verifier.poll_revocations().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(revocations = n, "applied revocations from the store's log"),
                Err(e) => tracing::warn!(error = %e, "cannot poll the revocation log"),
            },
            _ = shutdown.cancelled() => return,
        }
    }
}
