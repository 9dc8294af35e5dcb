//! The QMTP server (qmail-qmtpd): a listener reading [`crate::qmtp::server`] packages and
//! queueing each message for the recipients the SMTP rules allow (the receiver's settings:
//! `control/smtp.rules` with RELAYCLIENT and DATABYTES, rcpthosts, databytes, realrcptto).
//! Client host names are not looked up: `=host` rules do not match QMTP clients.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::env::{unix_secs, Env, Listener, Net};
use crate::netio::{read_timed, write_timed};
use crate::qmtp::server::{Package, Session, Step};
use crate::qmtp::{check_rcpt, queued, Reply};
use crate::queue::service::QueueHandle;
use crate::queue::NewMessage;
use crate::smtp::received::Peer;
use crate::smtp::server::{Policy, MAX_MESSAGE};
use crate::smtpd::Settings;

/// What QMTP and QMQP sessions share.
pub struct Server<E: Env> {
    pub env: E,
    /// The installation (QMQP reads its rules from it for each connection).
    pub root: std::path::PathBuf,
    pub queue: QueueHandle,
    pub settings: watch::Receiver<Arc<Settings>>,
    active: AtomicUsize,
    sessions: AtomicU64,
}

impl<E: Env> Server<E> {
    pub fn new(
        env: E,
        root: std::path::PathBuf,
        queue: QueueHandle,
        settings: watch::Receiver<Arc<Settings>>,
    ) -> Self {
        Server {
            env,
            root,
            queue,
            settings,
            active: AtomicUsize::new(0),
            sessions: AtomicU64::new(0),
        }
    }

    /// The limit on a message's size for a client's policy.
    pub fn limit(p: &Policy) -> u64 {
        if p.databytes > 0 {
            p.databytes
        } else {
            MAX_MESSAGE
        }
    }

    /// Queue `message` (LF line ends) from `peer` with a Received line naming `proto`.
    pub async fn submit(
        &self,
        proto: &str,
        peer: &Peer,
        sender: String,
        recipients: Vec<String>,
        message: &[u8],
    ) -> Reply {
        let qp = self.sessions.load(Ordering::Relaxed);
        let me = self.settings.borrow().me.clone();
        let line = crate::smtp::received::line(peer, None, &me, proto, self.now());
        let mut data = line.into_bytes();
        data.extend_from_slice(message);
        let m = NewMessage {
            sender,
            recipients,
            data,
            qp,
            uid: 0,
        };
        queued(self.queue.submit(m).await)
    }

    fn now(&self) -> u64 {
        unix_secs(self.env.now())
    }
}

/// Accept connections until `shutdown` turns true, running `session` for each (as long as
/// fewer than `concurrencyincoming` are running), then wait for the sessions in progress.
pub async fn accept_loop<E, S, F>(
    srv: Arc<Server<E>>,
    listener: <E::Net as Net>::Listener,
    mut shutdown: watch::Receiver<bool>,
    session: S,
) where
    E: Env,
    S: Fn(Arc<Server<E>>, <E::Net as Net>::Stream, SocketAddr) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let limit = srv.settings.borrow().concurrency;
                    srv.sessions.fetch_add(1, Ordering::Relaxed);
                    if srv.active.fetch_add(1, Ordering::SeqCst) >= limit {
                        srv.active.fetch_sub(1, Ordering::SeqCst);
                        tracing::info!("{peer}: concurrencyincoming reached, refused");
                        continue;
                    }
                    let (s2, run) = (srv.clone(), session(srv.clone(), stream, peer));
                    sessions.spawn(async move {
                        run.await;
                        s2.active.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    srv.env.sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

/// Serve QMTP until `shutdown`.
pub async fn serve<E: Env>(
    srv: Arc<Server<E>>,
    listener: <E::Net as Net>::Listener,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(srv, listener, shutdown, |srv, stream, peer| async move {
        if let Err(e) = session(&srv, stream, peer).await {
            tracing::debug!("qmtp {peer}: {e}");
        }
    })
    .await;
}

/// One QMTP connection: packages until the client closes.
async fn session<E: Env, S>(srv: &Server<E>, mut stream: S, peer: SocketAddr) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let settings = srv.settings.borrow().clone();
    let Some(policy) = settings.policy_for(peer, None) else {
        tracing::info!("qmtp {peer}: refused by the rules");
        return Ok(());
    };
    let (env, t) = (&srv.env, settings.timeout);
    let mut s = Session::new(Server::<E>::limit(&policy));
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match read_timed(env, &mut stream, &mut buf, t).await? {
            None => return Ok(()),
            Some(0) if !s.between_packages() => {
                tracing::info!("qmtp {peer}: connection closed in the middle of a package");
                return Ok(());
            }
            Some(0) => return stream.shutdown().await,
            Some(n) => n,
        };
        let mut step = s.input(&buf[..n]);
        loop {
            match step {
                Step::Idle => break,
                Step::Close(e) => {
                    tracing::info!("qmtp {peer}: {e}");
                    return Ok(());
                }
                Step::Package(p) => {
                    let replies = package(srv, &policy, p).await;
                    s.answer(&replies);
                    write_timed(env, &mut stream, &s.take_output(), t).await?;
                    step = s.input(&[]);
                }
            }
        }
    }
}

/// Each recipient's reply: the rules' refusal, or what the queue said about the message.
async fn package<E: Env>(srv: &Server<E>, p: &Policy, pkg: Package) -> Vec<Reply> {
    let n = pkg.recipients.len();
    let message = match pkg.message {
        Ok(m) => m,
        Err(r) => return vec![r; n],
    };
    let checked: Vec<Result<String, Reply>> = pkg
        .recipients
        .iter()
        .map(|r| {
            let a = check_rcpt(p, r)?;
            match &p.rcpt_check {
                Some(c) if !(c.0)(&a) => Err(Reply::Perm(
                    "sorry, no mailbox here by that name (#5.1.1)".into(),
                )),
                _ => Ok(a),
            }
        })
        .collect();
    let accepted: Vec<String> = checked.iter().filter_map(|r| r.clone().ok()).collect();
    if accepted.is_empty() {
        return checked.into_iter().filter_map(Result::err).collect();
    }
    let r = srv
        .submit("QMTP", &p.peer, pkg.sender, accepted, &message)
        .await;
    checked
        .into_iter()
        .map(|c| c.map_or_else(|e| e, |_| r.clone()))
        .collect()
}
