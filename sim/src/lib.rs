//! The deterministic simulator of the mta: a simulated filesystem with a crash model, the
//! simulated environment (turmoil network and time), scenarios with their oracles, and the
//! crash-point enumerator.

pub mod campaign;
pub mod corruption;
pub mod costs;
pub mod crash;
pub mod damage;
pub mod deliver;
pub mod dns_server;
pub mod env;
pub mod fixture;
pub mod fs;
pub mod fuzz;
pub mod host;
pub mod install;
pub mod lifecycle;
pub mod local_crash;
pub mod mini_qmail;
pub mod mutation;
pub mod oracle;
pub mod pop3_crash;
pub mod pop3_reader;
pub mod profile;
pub mod receive;
pub mod remote_world;
pub mod report;
pub mod schedule_scenario;
pub mod shards;
pub mod swarm;
pub mod world;
