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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::memory::MemorySink;

    fn letter() -> DeadLetter {
        DeadLetter {
            key: Some(b"r".to_vec()),
            value: Some(b"{}".to_vec()),
            headers: vec![("error", "too_large".into()), ("message-id", "m1".into())],
        }
    }

    fn counted(metrics: &Metrics, reason: &str) -> u64 {
        metrics.dlq.with_label_values(&[reason]).get()
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_letter_is_retried_until_it_is_stored() {
        let unavailable = || SinkError::Unavailable("the broker is away".into());
        let sink = MemorySink::refusing_over(usize::MAX)
            .failing_dead_letters((0..20).map(|_| unavailable()).collect());
        let metrics = Metrics::default();
        let (_trigger, mut stop) = Stop::new();
        assert!(send(&sink, &letter(), "m1", &metrics, &mut stop).await);
        assert_eq!(sink.dead_letter_attempts(), 21);
        assert_eq!(sink.dead_letters(), [letter()]);
        assert_eq!(counted(&metrics, "too_large"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_stop_ends_the_retries_of_an_unstored_dead_letter() {
        let sink = MemorySink::refusing_over(usize::MAX).failing_dead_letters(
            (0..1000)
                .map(|_| SinkError::Unavailable("the broker is away".into()))
                .collect(),
        );
        let metrics = Metrics::default();
        let (trigger, mut stop) = Stop::new();
        let stopping = async {
            // A minute of retries (on the paused clock), then the stop.
            tokio::time::sleep(Duration::from_secs(60)).await;
            trigger.fire();
        };
        let letter = letter();
        let (sent, ()) = tokio::join!(send(&sink, &letter, "m1", &metrics, &mut stop), stopping);
        assert!(!sent, "reported as written");
        assert!(
            sink.dead_letter_attempts() > 5,
            "{} attempts",
            sink.dead_letter_attempts()
        );
        assert!(sink.dead_letters().is_empty());
        assert_eq!(counted(&metrics, "too_large"), 0);
    }

    #[tokio::test]
    async fn a_dead_letter_refused_even_bare_is_counted_as_dead_letter_refused() {
        let refused = SinkError::Refused {
            reason: "too_large".into(),
            detail: "over the topic's limit".into(),
        };
        let sink = MemorySink::refusing_over(usize::MAX).failing_dead_letters(vec![refused]);
        let metrics = Metrics::default();
        let (_trigger, mut stop) = Stop::new();
        assert!(
            send(&sink, &letter(), "m1", &metrics, &mut stop).await,
            "the relay moves on"
        );
        assert_eq!(sink.dead_letter_attempts(), 1, "a refusal is not retried");
        assert_eq!(counted(&metrics, "dead_letter_refused"), 1);
        assert_eq!(counted(&metrics, "too_large"), 0);
        assert!(metrics
            .render()
            .contains(r#"roomcast_bridge_dlq_total{reason="dead_letter_refused"} 1"#));
    }
}
