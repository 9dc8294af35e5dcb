use mta::queue::{Disabled, SyncPoint};
fn main() {
    for p in SyncPoint::ALL {
        let mut cfg = sim::crash::small_segments();
        cfg.disabled = Disabled::only(p);
        let r = sim::crash::queue_lifecycle(&cfg, 1);
        println!(
            "{p:?}: states {} violations {}",
            r.states,
            r.violations.len()
        );
        if let Some(v) = r.violations.first() {
            println!("   {v:?}");
        }
    }
}
