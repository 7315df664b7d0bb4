//! Metrics reporters: every `metrics.reporter.<name>.interval` seconds, a
//! snapshot of the container's registry goes to the log (`factory=log`) or,
//! as one JSON message keyed by container, to a stream (`factory=stream`).
//! Reporters only read the registry, so more kinds (e.g. a Prometheus
//! endpoint reading the same registry) need no change to tasks.

use crate::error::RuntimeError;
use crate::job_config::{JobConfig, ReporterSpec};
use crate::producers::{Producers, Router};
use crate::systems::Systems;
use gregor_api::MetricsRegistry;
use gregor_api::collector::PendingSend;
use std::time::Instant;

pub(crate) struct Reporter {
    spec: ReporterSpec,
    pub next: Instant,
}

impl Reporter {
    pub fn new(spec: ReporterSpec, now: Instant) -> Self {
        Reporter { next: now + spec.interval, spec }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn report(
        &mut self,
        now: Instant,
        job: &JobConfig,
        container: &str,
        metrics: &MetricsRegistry,
        router: &mut Router,
        systems: &Systems,
        producers: &mut Producers,
    ) -> Result<(), RuntimeError> {
        self.next = now + self.spec.interval;
        let snapshot = serde_json::json!({
            "job": job.name,
            "job-id": job.id,
            "container": container,
            "timestamp": producers.now_ms,
            "metrics": metrics.snapshot(),
        });
        match &self.spec.stream {
            None => tracing::info!(target: "gregor::metrics", reporter = %self.spec.name, "{snapshot}"),
            Some(stream) => {
                let mut buf = container.as_bytes().to_vec();
                let key_end = buf.len();
                serde_json::to_writer(&mut buf, &snapshot)
                    .map_err(|source| RuntimeError::Encode { what: "a metrics snapshot", source })?;
                let send = PendingSend {
                    stream: 0,
                    partition: None,
                    key: Some(0..key_end),
                    value: Some(key_end..buf.len()),
                    timestamp: None,
                    headers: None,
                };
                let route = router.route_of(job, systems, stream)?;
                router.send(route, producers, &send, &buf, None)?;
            }
        }
        Ok(())
    }
}
