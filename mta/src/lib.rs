//! A qmail-compatible mail transfer agent, written against abstract environment traits so the
//! same code runs on a real host and in the deterministic simulator.
//!
//! Data flows one way, each stage talking to the next through the queue on disk:
//! inject/smtpd → [`queue`] → send → local | remote → (bounce → queue).

pub mod addrlist;
pub mod auth;
pub mod cdb;
pub mod control;
pub mod daemon;
pub mod date;
pub mod dns;
pub mod env;
pub mod fuzz;
mod helperframe;
pub mod init;
pub mod inject;
pub mod ipme;
pub mod local;
pub mod netio;
pub mod netstring;
pub mod passwd;
pub mod planted;
pub mod pop3;
pub mod pop3d;
pub mod qmqp;
pub mod qmqpd;
pub mod qmtp;
pub mod qmtpd;
pub mod queue;
pub mod remote;
pub mod send;
pub mod smtp;
pub mod smtpd;
pub mod tls;
