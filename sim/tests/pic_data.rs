//! The PIC scenarios of `fixtures/pic/` in the simulator: each installation set up as its
//! scenario says, each message injected through `mta inject`'s own code (qmail-inject), one
//! simulated day of `mta run`, and the scenario's expectations checked by the conformance
//! runner. `mta/tests/pic_real.rs` runs the same scenarios against the real binary.
//! `PIC_BLESS=1` writes what each `expect equals` file would have to hold, for review.

use std::sync::{Arc, Mutex};

use conformance::pic::{self, Host, Scenario, RELAYED};
use mta::inject::{run, Invocation};
use sim::deliver::{image, root, Run, World};
use sim::fs::{Faults, Persist};
use sim::remote_world::{run_world, Peer, PeerLog};

const DAY: u64 = 86_400;

/// The disk after the run, its log lines, and what the relay took (if the world had one).
struct Sim {
    w: World,
    lines: Vec<String>,
    relayed: Vec<String>,
}

impl Host for Sim {
    fn read(&self, path: &str) -> Option<String> {
        match path {
            RELAYED => Some(self.relayed.concat()),
            _ => self.w.read(path),
        }
    }
    fn log(&self) -> Vec<String> {
        self.lines.clone()
    }
    fn queued(&self) -> usize {
        self.w.queued().unwrap_or(usize::MAX)
    }
}

fn refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

fn play(s: &Scenario) -> Vec<String> {
    // The relay host of the simulated network, by the name its DNS gives it.
    let (controls, files) = s.with_relay("bigbang.af.mil");
    let w = World::new(image(&refs(&controls), &refs(&files)), 1);
    for i in &s.injects {
        let inv = Invocation {
            sender: Some(i.sender.clone()),
            extract: false,
            recipients: i.rcpts.clone(),
            message: s.message.clone().into_bytes(),
            origin: Default::default(),
            pid: 1,
            uid: 1000,
        };
        run(&w.env, &root(), &inv).unwrap_or_else(|f| panic!("{}: inject: {f:?}", s.name));
    }
    let host = if s.needs_relay() {
        with_relay(&w)
    } else {
        let r: Run = w.run(DAY);
        Sim {
            lines: r.log(),
            relayed: Vec::new(),
            w,
        }
    };
    if std::env::var_os("PIC_BLESS").is_some() {
        bless(s, &host);
    }
    pic::check(s, &host)
}

/// The installation in a networked world with a relay that accepts everything.
fn with_relay(w: &World) -> Sim {
    let relay = Arc::new(Mutex::new(PeerLog::default()));
    let img = w.env.sim_fs().crash_image(&Persist::All);
    let peers = vec![Peer::Accept];
    let r = run_world(
        img,
        peers,
        Some(relay.clone()),
        Faults::default(),
        Persist::Synced,
        120,
        1,
    );
    let lines = r.lines.lock().unwrap().clone();
    let relayed = relay.lock().unwrap().accepted.clone();
    Sim {
        w: r.world(),
        lines,
        relayed,
    }
}

/// Write each `expect equals` file as this run produced it (reviewed before committing).
fn bless(s: &Scenario, host: &Sim) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/pic")
        .join(&s.name);
    let text = std::fs::read_to_string(dir.join("scenario")).unwrap();
    for line in text
        .lines()
        .filter_map(|l| l.strip_prefix("expect equals "))
    {
        let (path, file) = line.split_once(' ').unwrap();
        let got = host
            .read(path)
            .unwrap_or_else(|| panic!("{}: no {path} to bless", s.name));
        std::fs::write(dir.join(file), got).unwrap();
    }
}

#[test]
fn pic_scenarios_hold_in_the_simulator() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pic");
    let all = pic::load_all(&dir).unwrap();
    assert_eq!(all.len(), 13, "every scenario directory loaded");
    let bad: Vec<String> = all
        .iter()
        .flat_map(|s| play(s).into_iter().map(move |b| format!("{}: {b}", s.name)))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}
