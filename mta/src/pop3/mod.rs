//! POP3 (RFC 1939) over the users' Maildirs, as qmail-popup + checkpassword + qmail-pop3d:
//! the dialogue ([`session`]), the mailbox ([`mailbox`]) and the message encoding on the wire
//! ([`wire`]), all free of I/O of their own; [`crate::pop3d`] runs them on the network.

pub mod mailbox;
pub mod session;
pub mod wire;
