//! One session of a processor with ZooKeeper: registration, the leader's
//! publishing, following models through barriers, the lease heartbeat.
//!
//! Must never start a container before its version's barrier is complete,
//! nor extend the lease on anything but an answer to this session.

use super::leader::{LeaderAction, LeaderState, publish_decision};
use super::{ProcessorJob, ZkError, ZkOptions, connect, op};
use gregor_runtime::{JobModel, Lease, RuntimeError};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkErr, OneshotWatcher, Stat};

pub(super) enum End {
    Done,
    Lost,
}

/// A container this processor runs.
struct Running {
    tasks: Vec<String>,
    version: u64,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<(), RuntimeError>>,
}

/// Where the processor is with the job models it follows.
enum Phase {
    /// No container runs and no model is pending (before the first model,
    /// or with no tasks in the current one).
    Idle,
    /// `model` is acknowledged; its container may start only once every
    /// processor of it has acknowledged. `kept` is the container of an
    /// earlier model whose tasks the new one leaves here: it goes on.
    Waiting { model: JobModel, kept: Option<Running> },
    /// The container of the current model runs.
    Running(Running),
}

impl Phase {
    fn running(&self) -> Option<&Running> {
        match self {
            Phase::Running(r) | Phase::Waiting { kept: Some(r), .. } => Some(r),
            _ => None,
        }
    }

    /// Takes the container out, leaving a pending model pending.
    fn take_running(&mut self) -> Option<Running> {
        match std::mem::replace(self, Phase::Idle) {
            Phase::Running(r) => Some(r),
            Phase::Waiting { model, kept } => {
                *self = Phase::Waiting { model, kept: None };
                kept
            }
            Phase::Idle => None,
        }
    }
}

pub(super) struct Session<'a> {
    opts: &'a ZkOptions,
    job: &'a dyn ProcessorJob,
    client: Client,
    node: String,
    lease: Arc<Lease>,
    lost: Arc<AtomicBool>,
    heartbeat: tokio::task::JoinHandle<()>,
    /// processor ids by node name (node data never changes).
    ids: HashMap<String, String>,
    /// The newest model version acknowledged.
    acted: u64,
    phase: Phase,
    /// Used while this processor leads.
    leader: LeaderState,
}

const LOCAL_POLL: Duration = Duration::from_millis(25);

impl<'a> Session<'a> {
    fn path(&self, rest: &str) -> String {
        format!("{}/{rest}", self.opts.job_path)
    }

    pub(super) async fn join(opts: &'a ZkOptions, job: &'a dyn ProcessorJob) -> Result<Session<'a>, ZkError> {
        let client = connect(opts).await?;
        let dirs = CreateMode::Persistent.with_acls(Acls::anyone_all());
        for dir in ["processors", "barriers"] {
            let path = format!("{}/{dir}", opts.job_path);
            client.mkdir(&path, &dirs).await.map_err(op("create", &path))?;
        }
        let prefix = format!("{}/processors/p-", opts.job_path);
        let sent = Instant::now();
        let (_, seq) = client
            .create(
                &prefix,
                opts.processor_id.as_bytes(),
                &CreateMode::EphemeralSequential.with_acls(Acls::anyone_all()),
            )
            .await
            .map_err(op("create", &prefix))?;
        let node = format!("p-{seq}");
        let lease = Arc::new(Lease::until(sent + opts.session_timeout / 2));
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat(
            client.clone(),
            format!("{}/processors/{node}", opts.job_path),
            opts.session_timeout,
            lease.clone(),
            lost.clone(),
        ));
        let mut session = Session {
            opts,
            job,
            client,
            node,
            lease,
            lost,
            heartbeat,
            ids: HashMap::new(),
            acted: 0,
            phase: Phase::Idle,
            leader: LeaderState::new(Instant::now(), opts.partition_check),
        };
        if let Err(e) = session.wait_for_unique_id().await {
            session.leave().await;
            return Err(e);
        }
        if let Some(url) = &opts.monitor_url {
            session.register_monitor(url).await;
        }
        tracing::info!(processor = %opts.processor_id, node = %session.node, session_timeout = ?opts.session_timeout, "joined the job's processors in ZooKeeper");
        Ok(session)
    }

    /// Another node with this id and a lower sequence number is this
    /// processor's previous life (killed, session not yet expired) or a
    /// misconfiguration: wait for it to go, up to twice the session timeout.
    async fn wait_for_unique_id(&mut self) -> Result<(), ZkError> {
        let deadline = Instant::now() + self.opts.session_timeout * 2;
        loop {
            let (members, _) = self.members().await?;
            let twin = members.iter().find(|(node, id)| *id == self.opts.processor_id && *node < self.node);
            let Some((node, _)) = twin else { return Ok(()) };
            if Instant::now() >= deadline {
                return Err(ZkError::DuplicateId { id: self.opts.processor_id.clone(), node: node.clone() });
            }
            tracing::info!(node = %node, "waiting for an older session with this processor.id to end");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Registers this processor's status page (ephemeral: it goes with the
    /// session). Best effort: a failure costs `gregor job status` the URL only.
    async fn register_monitor(&self, url: &str) {
        let dir = self.path("monitors");
        let path = format!("{dir}/{}", self.opts.processor_id);
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
        let _ = self.client.mkdir(&dir, &persistent).await;
        // A previous life of this processor id (its session is over: see
        // wait_for_unique_id) may have left its node until expiry.
        let _ = self.client.delete(&path, None).await;
        if let Err(e) = self.client.create(&path, url.as_bytes(), &ephemeral).await {
            tracing::warn!("cannot register the status page {url} in ZooKeeper at {path}: {e}");
        }
    }

    /// Live processors as (node, id), in sequence order (leader first),
    /// with a watch on membership.
    async fn members(&mut self) -> Result<(Vec<(String, String)>, OneshotWatcher), ZkError> {
        let dir = self.path("processors");
        let (mut nodes, _, watch) = self.client.get_and_watch_children(&dir).await.map_err(op("list", &dir))?;
        nodes.sort();
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            if !self.ids.contains_key(&node) {
                let path = format!("{dir}/{node}");
                match self.client.get_data(&path).await {
                    Ok((data, _)) => {
                        self.ids.insert(node.clone(), String::from_utf8_lossy(&data).into_owned());
                    }
                    Err(ZkErr::NoNode) => continue, // left meanwhile
                    Err(e) => return Err(op("read", &path)(e)),
                }
            }
            out.push((node.clone(), self.ids[&node].clone()));
        }
        Ok((out, watch))
    }

    async fn read_model(&self) -> Result<(Option<(JobModel, Stat)>, OneshotWatcher), ZkError> {
        let path = self.path("model");
        let (stat, watch) = self.client.check_and_watch_stat(&path).await.map_err(op("watch", &path))?;
        if stat.is_none() {
            return Ok((None, watch));
        }
        let (data, stat) = match self.client.get_data(&path).await {
            Ok(x) => x,
            Err(ZkErr::NoNode) => return Ok((None, watch)),
            Err(e) => return Err(op("read", &path)(e)),
        };
        let model = JobModel::from_json(&data).map_err(|message| ZkError::BadModel { path, message })?;
        Ok((Some((model, stat)), watch))
    }

    /// Follows the group until shutdown, a lost session or a failure; the
    /// container is stopped in every case (without committing when the
    /// session is lost).
    pub(super) async fn run(&mut self, shutdown: &AtomicBool) -> Result<End, ZkError> {
        let end = loop {
            match self.follow(shutdown).await {
                Err(ZkError::Op { source: ZkErr::ConnectionLoss | ZkErr::Timeout, op, path }) => {
                    // The client reconnects by itself; the lease keeps this safe meanwhile.
                    tracing::warn!("ZooKeeper {op} of {path}: connection lost; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(ZkError::Op { source: ZkErr::SessionExpired | ZkErr::ClientClosed, .. }) => break Ok(End::Lost),
                other => break other,
            }
        };
        if matches!(end, Ok(End::Lost)) {
            self.lease.revoke();
        }
        if let Err(e) = self.stop_container().await {
            tracing::error!("{e}");
        }
        end
    }

    async fn follow(&mut self, shutdown: &AtomicBool) -> Result<End, ZkError> {
        loop {
            if shutdown.load(Ordering::Relaxed) {
                self.stop_container().await?;
                return Ok(End::Done);
            }
            if self.lost.load(Ordering::Acquire) {
                return Ok(End::Lost);
            }
            if self.phase.running().is_some_and(|r| r.handle.is_finished()) {
                return match self.stop_container().await {
                    // The tasks asked to stop, or their inputs ended.
                    Ok(false) => Ok(End::Done),
                    // Stopped for want of a lease while the session lives:
                    // join again so the model is recomputed.
                    Ok(true) => Ok(End::Lost),
                    Err(e) => Err(e),
                };
            }
            let (members, members_watch) = self.members().await?;
            let (model, model_watch) = self.read_model().await?;
            let mut wake = None;
            if self.is_leader(&members) {
                match self.lead(&members, model.as_ref()).await? {
                    None => continue, // read what was just published
                    Some(at) => wake = Some(at),
                }
            }
            if let Some((m, _)) = model
                && m.version > self.acted
            {
                self.adopt(m).await?;
            }
            let barrier_watch = self.check_barrier().await?;
            tokio::select! {
                _ = members_watch.changed() => {}
                _ = model_watch.changed() => {}
                _ = async { match barrier_watch { Some(w) => { w.changed().await; } None => std::future::pending().await } } => {}
                _ = self.local_event(shutdown, wake) => {}
            }
        }
    }

    fn is_leader(&self, members: &[(String, String)]) -> bool {
        members.first().is_some_and(|(node, _)| *node == self.node)
    }

    /// Returns when something local needs the loop: a signal, a lost
    /// session, a container that ended, or the deadline.
    async fn local_event(&self, shutdown: &AtomicBool, wake: Option<Instant>) {
        loop {
            if shutdown.load(Ordering::Relaxed)
                || self.lost.load(Ordering::Acquire)
                || self.phase.running().is_some_and(|r| r.handle.is_finished())
                || wake.is_some_and(|w| Instant::now() >= w)
            {
                return;
            }
            tokio::time::sleep(LOCAL_POLL).await;
        }
    }

    /// The leader's part: publishes a new model when membership has been
    /// stable for the debounce time, or when partition counts changed (see
    /// `leader`). Returns `None` once it published (or lost a race to
    /// publish), else when to look again.
    async fn lead(
        &mut self,
        members: &[(String, String)],
        model: Option<&(JobModel, Stat)>,
    ) -> Result<Option<Instant>, ZkError> {
        let live: Vec<String> = members.iter().map(|(_, id)| id.clone()).collect();
        let published: Option<Vec<String>> = model.map(|(m, _)| m.containers.iter().map(|c| c.id.clone()).collect());
        let now = Instant::now();
        let membership_differs =
            match self.leader.decide(&live, published.as_deref(), now, self.opts.debounce, self.opts.partition_check) {
                LeaderAction::WaitUntil(at) => return Ok(Some(at)),
                LeaderAction::Compute { membership_differs } => membership_differs,
            };
        let previous = model.map(|(m, _)| m);
        let computed = self.job.job_model(&live, previous)?;
        let Some(new) = publish_decision(previous, computed, membership_differs) else {
            return Ok(Some(now + self.opts.partition_check)); // partition counts unchanged
        };
        let json = new.to_json();
        let path = self.path("model");
        let written = match model {
            None => self
                .client
                .create(&path, &json, &CreateMode::Persistent.with_acls(Acls::anyone_all()))
                .await
                .map(|_| ()),
            Some((_, stat)) => self.client.set_data(&path, &json, Some(stat.version)).await.map(|_| ()),
        };
        match written {
            Ok(()) => {}
            // Someone else wrote it meanwhile: look again.
            Err(ZkErr::NodeExists | ZkErr::BadVersion) => return Ok(None),
            Err(e) => return Err(op("write", &path)(e)),
        }
        let shares: Vec<String> = new.containers.iter().map(|c| format!("{}={}", c.id, c.tasks.len())).collect();
        tracing::info!(version = new.version, tasks = new.task_count, processors = %shares.join(" "), "published a new job model");
        // Barriers two versions back are no longer waited for.
        if new.version > 2 {
            let old = self.path(&format!("barriers/{}", new.version - 2));
            if let Ok(acks) = self.client.list_children(&old).await {
                for a in acks {
                    let _ = self.client.delete(&format!("{old}/{a}"), None).await;
                }
                let _ = self.client.delete(&old, None).await;
            }
        }
        Ok(None)
    }

    /// A new model: stop what moves away, acknowledge, and wait for the others.
    async fn adopt(&mut self, model: JobModel) -> Result<(), ZkError> {
        let mine = tasks_of(&model, &self.opts.processor_id);
        if self.phase.running().is_some_and(|r| r.tasks != mine) {
            self.stop_container().await?;
        }
        let dir = self.path(&format!("barriers/{}", model.version));
        let dirs = CreateMode::Persistent.with_acls(Acls::anyone_all());
        self.client.mkdir(&dir, &dirs).await.map_err(op("create", &dir))?;
        let ack = format!("{dir}/{}", self.opts.processor_id);
        match self.client.create(&ack, &[], &dirs).await {
            Ok(_) | Err(ZkErr::NodeExists) => {}
            Err(e) => return Err(op("create", &ack)(e)),
        }
        tracing::info!(version = model.version, tasks = mine.len(), "acknowledged job model; waiting for the others");
        self.acted = model.version;
        let kept = self.phase.take_running();
        self.phase = Phase::Waiting { model, kept };
        Ok(())
    }

    /// While waiting: starts the container once every processor of the
    /// model acknowledged; otherwise returns a watch on the acknowledgements.
    async fn check_barrier(&mut self) -> Result<Option<OneshotWatcher>, ZkError> {
        let Phase::Waiting { model, .. } = &self.phase else { return Ok(None) };
        let dir = self.path(&format!("barriers/{}", model.version));
        let (acks, _, watch) = match self.client.get_and_watch_children(&dir).await {
            Ok(x) => x,
            Err(ZkErr::NoNode) => return Ok(None), // cleaned up: a newer model exists
            Err(e) => return Err(op("list", &dir)(e)),
        };
        if !model.containers.iter().all(|c| acks.contains(&c.id)) {
            return Ok(Some(watch));
        }
        let Phase::Waiting { model, kept } = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Ok(None);
        };
        let mine = tasks_of(&model, &self.opts.processor_id);
        self.phase = match kept {
            // Its tasks did not change: it goes on under the new model.
            Some(r) => Phase::Running(r),
            None if mine.is_empty() => Phase::Idle,
            None => {
                let stop = Arc::new(AtomicBool::new(false));
                let handle = self
                    .job
                    .start_container(&model, &self.opts.processor_id, self.lease.clone(), stop.clone())
                    .map_err(|source| ZkError::Local { what: "cannot start a container thread", source })?;
                tracing::info!(version = model.version, tasks = mine.len(), "barrier complete; container started");
                Phase::Running(Running { tasks: mine, version: model.version, stop, handle })
            }
        };
        Ok(None)
    }

    /// Stops the container (it commits unless its lease is gone) and waits
    /// for it. Returns whether it stopped for want of a lease.
    async fn stop_container(&mut self) -> Result<bool, ZkError> {
        let Some(r) = self.phase.take_running() else { return Ok(false) };
        r.stop.store(true, Ordering::SeqCst);
        while !r.handle.is_finished() {
            tokio::time::sleep(LOCAL_POLL).await;
        }
        match r.handle.join() {
            Ok(Ok(())) => {
                tracing::info!(version = r.version, "container stopped");
                Ok(false)
            }
            Ok(Err(RuntimeError::LeaseExpired { .. })) => {
                tracing::warn!(version = r.version, "container stopped without committing: lease expired");
                Ok(true)
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ZkError::ContainerPanicked { processor: self.opts.processor_id.clone() }),
        }
    }

    /// Leaves the group at once (instead of at session expiry), so the
    /// others rebalance without waiting.
    pub(super) async fn leave(&mut self) {
        self.heartbeat.abort();
        let path = self.path(&format!("processors/{}", self.node));
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.delete(&path, None)).await;
    }
}

fn tasks_of(model: &JobModel, id: &str) -> Vec<String> {
    model.containers.iter().filter(|c| c.id == id).flat_map(|c| c.tasks.iter().map(|t| t.name.clone())).collect()
}

/// Extends the lease on every answer from ZooKeeper about this processor's
/// node; flags the session as lost when ZooKeeper says it is gone.
async fn heartbeat(client: Client, node: String, timeout: Duration, lease: Arc<Lease>, lost: Arc<AtomicBool>) {
    let every = (timeout / 6).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        match client.check_stat(&node).await {
            Ok(Some(_)) => lease.extend_to(sent + timeout / 2),
            Ok(None) | Err(ZkErr::SessionExpired | ZkErr::ClientClosed | ZkErr::AuthFailed) => {
                lease.revoke();
                lost.store(true, Ordering::Release);
                return;
            }
            // Disconnected: the lease runs out by itself unless an answer comes in time.
            Err(e) => tracing::warn!("no answer from ZooKeeper: {e}"),
        }
    }
}
