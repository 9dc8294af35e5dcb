//! The swarm's mini-qmail host: a machine with no queue whose `mta inject` hands each message
//! over QMQP to the MTA (`mta run --listen-qmqp`), as `mta::qmqp::send` does for a real
//! mini-qmail installation. A transmission is acknowledged when the MTA answered `K`; one
//! that was not is tried again later under a new token, as a sender would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mta::queue::NewMessage;

use crate::env::SimEnv;
use crate::fixture::EPOCH_MS;
use crate::fs::{Clock, SimFs};
use crate::oracle::{self, Sent};

/// Where the MTA serves QMQP.
pub const PORT: u16 = 628;
/// `control/qmqp.rules` of a world with a mini-qmail host: the simulated network is trusted.
pub const RULES: &str = ":allow\n";

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

fn message(token: &str) -> NewMessage {
    let data = format!("Subject: swarm {token}\n\n{}\n", oracle::token_line(token));
    NewMessage {
        sender: "bob@mini.example".into(),
        recipients: vec!["fred@heaven.af.mil".into()],
        data: data.into_bytes(),
        qp: 1,
        uid: 1000,
    }
}

/// `n` messages, one every 25 s, each tried every 10 s until the MTA takes it.
pub async fn host(n: usize, seed: u64, ledger: Arc<Mutex<Vec<Sent>>>) -> turmoil::Result {
    let clock = Clock::new(EPOCH_MS);
    let env = SimEnv::turmoil(SimFs::new(clock.clone()), clock, EPOCH_MS, seed);
    let servers = [std::net::SocketAddr::new(turmoil::lookup("mta"), PORT)];
    for i in 0..n {
        tokio::time::sleep(Duration::from_secs(25)).await;
        for k in 0.. {
            let token = format!("mini{i}t{k}");
            let at = {
                let mut l = ledger.lock().unwrap_or_else(|e| e.into_inner());
                l.push(Sent {
                    token: token.clone(),
                    acked: false,
                    at_ms: now_ms(),
                });
                l.len() - 1
            };
            let m = message(&token);
            let send = mta::qmqp::send(&env, &servers, &m);
            let r = tokio::time::timeout(Duration::from_secs(90), send).await;
            if matches!(r, Ok(Ok(_))) {
                ledger.lock().unwrap_or_else(|e| e.into_inner())[at].acked = true;
                break;
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }
    Ok(())
}
