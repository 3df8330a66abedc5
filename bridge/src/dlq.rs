//! Dead letters: what the relay cannot deliver goes to the dead-letter topic,
//! is counted under its reason, and is logged with its message id. Writing
//! one is retried until the broker has it, so a dead letter is never lost to
//! a broker hiccup; only a stop interrupts it.

use tracing::{error, warn};

use crate::backoff::Backoff;
use crate::broker::{DeadLetter, Sink, SinkError};
use crate::metrics::Metrics;
use crate::stop::Stop;

/// Writes `letter` about message `id`; `false` when the bridge stopped first.
pub async fn send(
    sink: &dyn Sink,
    letter: &DeadLetter,
    id: &str,
    metrics: &Metrics,
    stop: &mut Stop,
) -> bool {
    let mut backoff = Backoff::network();
    loop {
        match sink.dead_letter(letter).await {
            Ok(()) => {
                metrics.dlq.with_label_values(&[letter.reason()]).inc();
                warn!(
                    id,
                    reason = letter.reason(),
                    "sent to the dead-letter topic"
                );
                return true;
            }
            Err(SinkError::Refused { reason, detail }) => {
                // Even the headers alone were refused: nothing more can be
                // done with it, so it is reported as loudly as possible.
                metrics
                    .dlq
                    .with_label_values(&["dead_letter_refused"])
                    .inc();
                error!(
                    id,
                    reason, "the dead-letter topic refused the record: {detail}"
                );
                return true;
            }
            Err(SinkError::Unavailable(why)) => {
                warn!(id, "writing a dead letter: {why}; retrying");
                if !stop.pause(&mut backoff).await {
                    return false;
                }
            }
        }
    }
}
