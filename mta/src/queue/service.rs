//! The queue as a service: the queue manager owns the [`Queue`](super::Queue) and serves
//! requests from many sessions through these handles, draining whatever is waiting into one
//! durable append (group commit).

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

/// A cheap, cloneable handle to the queue service.
#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::Sender<Request>,
}

impl QueueHandle {
    /// Queue a message; returns once it is durable (or refused).
    pub async fn submit(&self, m: NewMessage) -> Result<MsgId, Refusal> {
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

/// Create the channel between handles and the queue manager.
pub fn channel() -> (QueueHandle, Inbox) {
    let (tx, rx) = mpsc::channel(MAX_BATCH);
    (QueueHandle { tx }, Inbox(rx))
}
