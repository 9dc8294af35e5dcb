//! Simulated MTA hosts: a [`Disk`] that survives crashes, booted through `mta::daemon::run`
//! (the start-up path of `mta run`), with the one supervisor production documents: a process
//! that exits with 111 (it could not start) is started again; nothing else is restarted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use mta::daemon::{self, Options, EXIT_TEMP};
use mta::env::Signal;

use crate::env::{Process, SimEnv};
use crate::fixture::{root, EPOCH_MS, PORT};
use crate::fs::Persist;
use crate::world::Disk;

/// One MTA machine of a world.
#[derive(Clone)]
pub struct MtaHost {
    /// turmoil's name for the host (its address is one of its own).
    pub name: &'static str,
    pub disk: Disk,
    pub seed: u64,
    /// Whether the world has a host named "dns" to use as the name server.
    pub dns: bool,
    /// Every qmail-format log line of every boot.
    pub lines: Arc<Mutex<Vec<String>>>,
    /// The optional listeners (POP3, QMTP, QMQP) each boot starts.
    pub listeners: mta::daemon::Listeners,
    /// Called on each boot's environment before `mta run` starts (scripted programs).
    pub setup: Option<Setup>,
    st: Arc<Mutex<HostState>>,
}

/// What [`MtaHost::setup`] runs on each boot's environment.
pub type Setup = Arc<dyn Fn(&SimEnv) + Send + Sync>;

#[derive(Default)]
struct HostState {
    process: Process,
    exits: Vec<i32>,
    /// What a process that exited after it had started serving said on stderr.
    died_serving: Vec<String>,
    restarts: usize,
    crashes: usize,
}

/// What [`MtaHost::tend`] did after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Nothing,
    /// The disk reached its crash point: the machine went down and came back.
    Crashed,
    /// The process exited with 111 and the supervisor started it again.
    Restarted,
    /// The process exited otherwise: nothing starts it again.
    Exited(i32),
}

impl MtaHost {
    pub fn new(name: &'static str, disk: Disk, seed: u64, dns: bool) -> Self {
        MtaHost {
            name,
            disk,
            seed,
            dns,
            lines: Arc::new(Mutex::new(Vec::new())),
            listeners: Default::default(),
            setup: None,
            st: Arc::new(Mutex::new(HostState::default())),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, HostState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register the host in a turmoil world.
    pub fn install(&self, sim: &mut turmoil::Sim<'_>) {
        let h = self.clone();
        sim.host(self.name, move || h.clone().boot());
    }

    /// One boot: mount the disk, run `mta run` until it exits.
    async fn boot(self) -> turmoil::Result {
        let fs = self.disk.boot();
        // A rebooted machine does not replay its randomness.
        let seed = self.seed ^ (u64::from(self.disk.boots()) << 32);
        let process = Process::default();
        self.st().process = process.clone();
        let env =
            SimEnv::turmoil(fs, self.disk.clock().clone(), EPOCH_MS, seed).with_process(process);
        if let Some(setup) = &self.setup {
            setup(&env);
        }
        let opts = Options {
            root: root(),
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT),
            listen_tls: None,
            nameservers: Some(if self.dns {
                vec![SocketAddr::new(turmoil::lookup("dns"), 53)]
            } else {
                Vec::new()
            }),
            local_ips: vec![turmoil::lookup(self.name)],
            log_sink: Some(sink(&self.lines)),
            fsync_off: mta::queue::Disabled::none(),
            listeners: self.listeners.clone(),
        };
        let code = daemon::run(env.clone(), opts).await;
        if env.sim_fs().is_frozen() {
            // The crash point was reached: the driver takes the machine down.
            return std::future::pending().await;
        }
        let started = env
            .process()
            .stdout()
            .iter()
            .any(|l| l.contains("listening"));
        let mut st = self.st();
        st.exits.push(code);
        if started {
            // Once serving, `mta run` must never exit on its own (a panic exits 111 too).
            let said = env.process().stderr();
            st.died_serving.push(format!("exit {code}: {said:?}"));
        }
        Ok(())
    }

    /// Send the running process a signal; false if it is not running or not listening yet.
    pub fn kill(&self, s: Signal) -> bool {
        self.st().process.kill(s)
    }

    /// What the current process printed on standard error.
    pub fn stderr(&self) -> Vec<String> {
        self.st().process.stderr()
    }

    /// Exit codes of every process that ended on its own.
    pub fn exits(&self) -> Vec<i32> {
        self.st().exits.clone()
    }
    /// Stderr of processes that exited after they had started serving (never acceptable).
    pub fn died_serving(&self) -> Vec<String> {
        self.st().died_serving.clone()
    }
    pub fn restarts(&self) -> usize {
        self.st().restarts
    }
    pub fn crashes(&self) -> usize {
        self.st().crashes
    }

    /// After each step: crash the machine when its disk froze (keeping what `persist` says
    /// reached the disk), restart a process that exited with 111.
    pub fn tend(&self, sim: &mut turmoil::Sim<'_>, persist: impl FnOnce() -> Persist) -> Event {
        if self.disk.frozen() {
            sim.crash(self.name);
            self.disk.crash(&persist());
            self.st().crashes += 1;
            sim.bounce(self.name);
            return Event::Crashed;
        }
        if sim.is_host_running(self.name) {
            return Event::Nothing;
        }
        let code = self.exits().last().copied().unwrap_or(0);
        if code != EXIT_TEMP {
            return Event::Exited(code);
        }
        self.disk.process_exited();
        self.st().restarts += 1;
        sim.bounce(self.name);
        Event::Restarted
    }
}

/// A log sink that keeps every line.
fn sink(lines: &Arc<Mutex<Vec<String>>>) -> mta::send::log::Sink {
    let lines = lines.clone();
    Arc::new(move |l: &str| {
        lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(l.to_string())
    })
}
