//! users/cdb: damaged tables and tables built from arbitrary users/assign text.

use crate::cdb::{self, InMemory};
use crate::local::assign::{lookup_cdb, Assign};

const LOCALS: [&str; 5] = ["fred", "fred-x", "", "joe-list-a", "Zz"];

/// Arbitrary bytes as a table are errors or answers, never a panic or a huge allocation; a
/// users/assign that parses gives a table that answers every lookup exactly as it does.
pub fn users_cdb(data: &[u8]) {
    let mut f = InMemory(data.to_vec());
    for l in LOCALS {
        let _ = lookup_cdb(&mut f, l);
    }
    let Ok(a) = Assign::parse(&String::from_utf8_lossy(data)) else {
        return;
    };
    let Ok(db) = cdb::build(&a.cdb_records()) else {
        return;
    };
    let mut f = InMemory(db);
    for l in LOCALS {
        assert_eq!(lookup_cdb(&mut f, l).ok().flatten(), a.lookup(l), "{l:?}");
    }
}
