//! Recipients of one message delivered together: a message's recipients whose domains
//! `qmtproutes` sends to the same QMTP host go in one package, as qmail-qmtpc sends them,
//! with one reply per recipient. Each recipient keeps its own delivery number, remote slot
//! and outcome record, so the queue sees the same per-recipient deliveries as ever.

use super::{JobResult, Manager, CHANNELS};
use crate::env::Env;
use crate::queue::{Classify, MsgId};
use crate::send::verp::sender_for;

impl<E: Env, C: Classify + Send + 'static> Manager<E, C> {
    /// Other recipients of message `id` waiting for remote delivery that can share `rcpt`'s
    /// transaction (the same batch key and sender), at most `room`, taken off the ready queue.
    pub(super) fn companions(&mut self, id: MsgId, rcpt: u32, room: usize) -> Vec<u32> {
        let (Some(remote), Some(m)) = (self.remote.clone(), self.q.get(id)) else {
            return Vec::new();
        };
        let addr = |r: u32| m.rcpts.get(r as usize).map(|x| x.rcpt.addr.as_str());
        let Some(first) = addr(rcpt) else {
            return Vec::new();
        };
        if room == 0 {
            return Vec::new();
        }
        let Some(key) = remote.batch_key(first) else {
            return Vec::new();
        };
        let sender = sender_for(&m.env.sender, first);
        let mut taken = Vec::new();
        self.ready[1].retain(|&(i, r)| {
            let fits = taken.len() < room
                && i == id
                && r != rcpt
                && addr(r).is_some_and(|a| {
                    remote.batch_key(a).as_deref() == Some(key.as_str())
                        && sender_for(&m.env.sender, a) == sender
                });
            if fits {
                taken.push(r);
            }
            !fits
        });
        taken
    }

    /// Start one delivery for several recipients of message `id` (one slot each).
    pub(super) fn start_batch(&mut self, id: MsgId, rcpts: Vec<u32>) {
        let Some(m) = self.q.get(id) else { return };
        let tos: Vec<String> = rcpts
            .iter()
            .map(|&r| m.rcpts[r as usize].rcpt.addr.clone())
            .collect();
        let sender = sender_for(&m.env.sender, &tos[0]);
        let channel = CHANNELS[1];
        self.running[1] += rcpts.len();
        for r in &rcpts {
            self.fresh.remove(&(id, *r));
        }
        let Some(body) = self.payload(id, rcpts.len()) else {
            for rcpt in rcpts {
                let _ = self.results_tx.send(JobResult {
                    id,
                    rcpt,
                    channel,
                    delivery: 0,
                    outcome: super::Outcome::Deferred(
                        "Unable to read the message. (#4.3.0)".into(),
                    ),
                });
            }
            return;
        };
        let mut ds = Vec::new();
        for to in &tos {
            let d = self.next_delivery;
            self.next_delivery += 1;
            self.log(&format!("starting delivery {d}: msg {id} to remote {to}"));
            ds.push(d);
        }
        self.log(&format!(
            "status: local {}/{} remote {}/{}",
            self.running[0], self.s.concurrency_local, self.running[1], self.s.concurrency_remote
        ));
        let (tx, env, remote) = (
            self.results_tx.clone(),
            self.env.clone(),
            self.remote.clone(),
        );
        tokio::spawn(async move {
            let outcomes = match remote {
                Some(r) => r.deliver_batch(env, sender, tos, body).await,
                None => Vec::new(),
            };
            for (i, (rcpt, d)) in rcpts.into_iter().zip(ds).enumerate() {
                let outcome = outcomes.get(i).cloned().unwrap_or_else(|| {
                    super::Outcome::Deferred("No remote delivery. (#4.3.0)".into())
                });
                let _ = tx.send(JobResult {
                    id,
                    rcpt,
                    channel,
                    delivery: d,
                    outcome,
                });
            }
        });
    }
}
