//! The queue manager (qmail-send): schedules delivery passes, runs local and remote
//! deliveries, records outcomes and queues bounces.

pub mod bounce;
pub mod log;
pub mod manager;
pub mod schedule;
pub mod verp;
