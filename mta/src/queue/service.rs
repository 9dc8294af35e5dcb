//! The queue as a service: the queue manager owns the [`Queue`](super::Queue) and serves
//! requests from many sessions through these handles, draining whatever is waiting into one
//! durable append (group commit).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{MsgId, NewMessage, QueueError};

/// Most requests folded into one append.
pub const MAX_BATCH: usize = 1024;

/// Why the queue refused a message, in the form a session reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub permanent: bool,
    /// qmail-smtpd's text, without the reply code.
    pub text: String,
}

impl From<&QueueError> for Refusal {
    fn from(e: &QueueError) -> Self {
        let (permanent, text) = match e {
            QueueError::AddressTooLong(_) | QueueError::BadAddress => (
                true,
                "envelope address too long for qq (#5.1.3)".to_string(),
            ),
            QueueError::NoRecipients => (
                true,
                "mail server permanently rejected message (#5.3.0)".into(),
            ),
            QueueError::Io { .. } => (false, "qq write error or disk full (#4.3.0)".into()),
            _ => (false, "qq temporary problem (#4.3.0)".into()),
        };
        Refusal { permanent, text }
    }
}

/// What handles ask of the queue.
pub(crate) enum Request {
    Submit(NewMessage, oneshot::Sender<Result<MsgId, Refusal>>),
    /// New `todo/` entries are waiting (qmail's trigger).
    Poke,
    /// Try every pending delivery now (qmail's SIGALRM).
    Flush,
    /// Reread the control files (qmail's SIGHUP).
    Reload,
}

/// Queues a message without the queue manager (into `todo/`, as `mta inject` does): the
/// way in while the manager is still recovering a large queue, so a restart does not keep
/// clients waiting (qmail-smtpd never waits for qmail-send either).
pub type Early = Arc<
    dyn Fn(NewMessage) -> Pin<Box<dyn Future<Output = Result<MsgId, Refusal>> + Send>>
        + Send
        + Sync,
>;

/// A cheap, cloneable handle to the queue service.
#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::Sender<Request>,
    /// Set once the queue manager serves requests; until then `early` takes messages.
    ready: Arc<AtomicBool>,
    early: Option<Early>,
}

impl QueueHandle {
    /// The queue manager has recovered the queue and serves requests from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Whether the queue manager serves requests yet.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Queue a message; returns once it is durable (or refused).
    pub async fn submit(&self, m: NewMessage) -> Result<MsgId, Refusal> {
        if let (false, Some(early)) = (self.is_ready(), &self.early) {
            let r = early(m).await;
            // The manager takes `todo/` in when it starts, and again when poked.
            self.poke();
            return r;
        }
        let (tx, rx) = oneshot::channel();
        let down = || Refusal {
            permanent: false,
            text: "qq temporary problem (#4.3.0)".into(),
        };
        self.tx
            .send(Request::Submit(m, tx))
            .await
            .map_err(|_| down())?;
        rx.await.map_err(|_| down())?
    }

    /// Tell the queue that `todo/` has new entries; does not wait.
    pub fn poke(&self) {
        let _ = self.tx.try_send(Request::Poke);
    }

    /// Make every pending delivery due now.
    pub fn flush(&self) {
        let _ = self.tx.try_send(Request::Flush);
    }

    /// Reread control files (locals, virtualdomains, delivery settings).
    pub fn reload(&self) {
        let _ = self.tx.try_send(Request::Reload);
    }
}

/// The service's end of the channel.
pub struct Inbox(pub(crate) mpsc::Receiver<Request>);

/// Create the channel between handles and the queue manager, ready at once.
pub fn channel() -> (QueueHandle, Inbox) {
    let (h, inbox) = channel_early(None);
    h.set_ready();
    (h, inbox)
}

/// Create the channel before the queue manager runs: until [`QueueHandle::set_ready`],
/// messages go through `early` (or wait for the manager if there is none).
pub fn channel_early(early: Option<Early>) -> (QueueHandle, Inbox) {
    let (tx, rx) = mpsc::channel(MAX_BATCH);
    let h = QueueHandle {
        tx,
        ready: Arc::new(AtomicBool::new(false)),
        early,
    };
    (h, Inbox(rx))
}
