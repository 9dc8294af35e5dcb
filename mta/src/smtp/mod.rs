//! SMTP protocol logic, sans IO: bytes in, replies and events out. The drivers that move the
//! bytes live in `smtpd` (server) and, later, `remote` (client).

pub mod address;
pub mod auth;
pub mod client;
pub mod deadline;
pub mod received;
pub mod server;
