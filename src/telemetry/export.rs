//! A batching span processor that never blocks a check and counts what it
//! drops. The SDK's `BatchSpanProcessor` keeps its drop count private, and
//! a drop count is what an operator alerts on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};

/// Spans waiting for export; beyond this they are dropped (and counted).
const QUEUE: usize = 8192;
/// Spans per export call.
const BATCH: usize = 512;
/// How long a span waits in the queue at most.
const DELAY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(super) struct Processor {
    tx: mpsc::Sender<SpanData>,
    dropped: Arc<AtomicU64>,
}

/// Flushes and reads the drop count.
#[derive(Debug, Clone)]
pub(super) struct Handle {
    flush: mpsc::Sender<oneshot::Sender<()>>,
    pub(super) dropped: Arc<AtomicU64>,
}

impl Processor {
    /// Spawns the export task on the current tokio runtime.
    pub(super) fn start<E: SpanExporter + 'static>(
        mut exporter: E,
        resource: &Resource,
    ) -> (Self, Handle) {
        exporter.set_resource(resource);
        let (tx, rx) = mpsc::channel(QUEUE);
        let (flush_tx, flush_rx) = mpsc::channel(4);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(exporter, rx, flush_rx, dropped.clone()));
        (
            Self {
                tx,
                dropped: dropped.clone(),
            },
            Handle {
                flush: flush_tx,
                dropped,
            },
        )
    }
}

impl Handle {
    pub(super) async fn flush(&self, timeout: Duration) {
        let (ack, done) = oneshot::channel();
        let _ = tokio::time::timeout(timeout, async {
            if self.flush.send(ack).await.is_ok() {
                let _ = done.await;
            }
        })
        .await;
    }
}

impl SpanProcessor for Processor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        // Never wait: a slow collector must not slow a check.
        if self.tx.try_send(span).is_err() {
            count_dropped(&self.dropped, 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Counts spans that never left the process.
fn count_dropped(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

async fn run<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<SpanData>,
    mut flush: mpsc::Receiver<oneshot::Sender<()>>,
    dropped: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(DELAY);
    let mut failing = false;
    loop {
        let ack = tokio::select! {
            span = rx.recv() => match span {
                Some(s) => {
                    batch.push(s);
                    if batch.len() < BATCH {
                        continue;
                    }
                    None
                }
                None => return,
            },
            _ = tick.tick() => None,
            ack = flush.recv() => ack,
        };
        // A flush takes everything queued so far.
        if ack.is_some() {
            while let Ok(s) = rx.try_recv() {
                batch.push(s);
            }
        }
        while !batch.is_empty() {
            let chunk: Vec<SpanData> = batch.drain(..batch.len().min(BATCH)).collect();
            let n = chunk.len();
            match exporter.export(chunk).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("span export recovered");
                        failing = false;
                    }
                }
                Err(e) => {
                    count_dropped(&dropped, n);
                    // Once per outage, not once per batch.
                    if !failing {
                        tracing::warn!(
                            spans = n,
                            "span export failed, dropping spans until the collector answers: {e}"
                        );
                        failing = true;
                    }
                }
            }
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }
}
