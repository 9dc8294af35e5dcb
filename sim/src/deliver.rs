//! A local-delivery world outside turmoil: an installation on a simulated disk, the queue
//! manager on a manual clock (sleeping advances it), injections through the queue.

use std::sync::Arc;
use std::time::Duration;

use mta::control::{ControlDir, Rewrite};
use mta::env::{Env, Fs};
use mta::local::LocalConfig;
use mta::queue::service::{self, QueueHandle};
use mta::queue::{Config, NewMessage, Paths, Queue};
use mta::send::manager::{Manager, Remote, Settings, Until};

use crate::env::SimEnv;
use crate::fixture::EPOCH_MS;
pub use crate::fixture::{image, root};
use crate::fs::{Clock, Image, SimFs};

/// A running world: the env and a handle to inject through.
pub struct World {
    pub env: SimEnv,
    pub paths: Paths,
}

impl World {
    pub fn new(img: Image, seed: u64) -> World {
        let clock = Clock::new(EPOCH_MS);
        World {
            env: SimEnv::manual(SimFs::from_image(img, clock.clone()), clock, seed),
            paths: Paths::new(root().join("queue")),
        }
    }

    /// Inject like `mta inject` (through todo/).
    pub fn inject(&self, sender: &str, rcpts: &[&str], data: &str) {
        let m = NewMessage {
            sender: sender.into(),
            recipients: rcpts.iter().map(|s| s.to_string()).collect(),
            data: data.as_bytes().to_vec(),
            qp: 1,
            uid: 1000,
        };
        mta::queue::inject(&self.env, &self.paths, &Config::default(), &[m]).expect("inject");
    }

    pub fn manager(
        &self,
        remote: Option<Arc<dyn Remote<SimEnv>>>,
    ) -> (Manager<SimEnv, Rewrite>, QueueHandle, service::Inbox) {
        self.manager_with(remote, mta::queue::Disabled::none())
            .expect("the queue opens")
    }

    /// [`World::manager`] with local-delivery fsyncs switched off (verification).
    pub fn manager_with(
        &self,
        remote: Option<Arc<dyn Remote<SimEnv>>>,
        off: mta::queue::Disabled,
    ) -> Option<(Manager<SimEnv, Rewrite>, QueueHandle, service::Inbox)> {
        let r = root();
        let c = ControlDir::new(self.env.fs(), &r);
        let rw = Rewrite::load(&c).ok()?;
        let mut s = Settings::load(self.env.fs(), &r).ok()?;
        s.local = Arc::new(LocalConfig {
            disabled: off,
            ..(*s.local).clone()
        });
        // Injections come before the manager starts here; no need to poll often.
        s.todo_poll = Duration::from_secs(3600);
        let (q, _) =
            Queue::open(self.env.clone(), self.paths.clone(), Config::default(), &rw).ok()?;
        let (h, inbox) = service::channel();
        Some((Manager::new(self.env.clone(), q, rw, s, remote), h, inbox))
    }

    /// Run the manager until the queue is empty or `limit` simulated seconds pass.
    pub fn run_until_empty(
        &self,
        remote: Option<Arc<dyn Remote<SimEnv>>>,
        limit: u64,
    ) -> Manager<SimEnv, Rewrite> {
        self.run_with(remote, limit, mta::queue::Disabled::none())
            .expect("the queue opens")
    }

    /// [`World::run_until_empty`] with local-delivery fsyncs switched off.
    pub fn run_with(
        &self,
        remote: Option<Arc<dyn Remote<SimEnv>>>,
        limit: u64,
        off: mta::queue::Disabled,
    ) -> Option<Manager<SimEnv, Rewrite>> {
        let (m, h, inbox) = self.manager_with(remote, off)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let until = Until::EmptyBy(mta::env::unix_secs(self.env.now()) + limit);
        let m = rt.block_on(async move {
            let m = m.run(inbox, until).await;
            drop(h);
            m
        });
        Some(m)
    }

    pub fn read(&self, p: &str) -> Option<String> {
        self.env
            .fs()
            .read(&root().join(p))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Files in a Maildir's new/ (contents, by name order).
    pub fn maildir(&self, dir: &str) -> Vec<String> {
        let d = root().join(dir).join("new");
        let fs = self.env.fs();
        fs.list_dir(&d)
            .unwrap_or_default()
            .iter()
            .map(|n| String::from_utf8_lossy(&fs.read(&d.join(n)).unwrap()).into_owned())
            .collect()
    }
}

impl World {
    /// Run until empty (or `limit` seconds) and return qmail-send's log lines too.
    pub fn run_logged(&self, limit: u64) -> (Manager<SimEnv, Rewrite>, Vec<String>) {
        let (mut m, h, inbox) = self.manager(None);
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        m.lines = Some(lines.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let until = Until::EmptyBy(mta::env::unix_secs(self.env.now()) + limit);
        let m = rt.block_on(m.run(inbox, until));
        drop(h);
        let lines = lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (m, lines)
    }
}

/// Log lines with message ids replaced by `[id]` (ids depend on the seed).
pub fn redact_ids(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| {
            l.split(' ')
                .map(|w| {
                    let bare = w.trim_end_matches(':');
                    if bare.parse::<mta::queue::MsgId>().is_ok() {
                        w.replace(bare, "[id]")
                    } else {
                        w.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
