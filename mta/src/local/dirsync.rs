//! Group commit of a directory's fsyncs: concurrent Maildir deliveries into one `new/` share
//! them. A delivery whose rename is done takes a ticket and needs one fsync of the directory
//! that starts after that; whoever finds none running starts one, which covers every ticket
//! taken before it began. Each caller gets the result of the first fsync that covered it, so
//! a failed one is reported to everyone whose entry it may have dropped.
//!
//! Waiting blocks the thread: deliveries run on threads of their own on a real host. In the
//! simulator an fsync never yields, so nobody ever finds one running and nothing waits.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Completed fsyncs remembered per directory for callers still to collect their result.
const HISTORY: usize = 64;

#[derive(Debug, Default)]
struct Dir {
    tickets: u64,
    running: bool,
    /// Callers inside [`DirSyncs::sync`] for this directory.
    inside: usize,
    /// Completed fsyncs in order: the last ticket each covered, and whether it worked.
    done: VecDeque<(u64, bool)>,
    /// The last ticket of the newest fsync dropped from `done`.
    forgotten: u64,
}

/// The directories' shared fsyncs (one per process and filesystem: see `LocalConfig`).
#[derive(Debug, Default)]
pub struct DirSyncs {
    dirs: Mutex<BTreeMap<PathBuf, Dir>>,
    finished: Condvar,
}

impl DirSyncs {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<PathBuf, Dir>> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make entries already made in the directory named `key` durable: `run` fsyncs it (the
    /// caller's own path to it), unless an fsync that starts later does it for everyone.
    pub fn sync(&self, key: &Path, run: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut g = self.lock();
        let d = g.entry(key.to_path_buf()).or_default();
        d.tickets += 1;
        d.inside += 1;
        let ticket = d.tickets;
        let r = loop {
            let d = g.get_mut(key).expect("entry kept while inside");
            if d.forgotten >= ticket {
                // Covered by an fsync too long ago to know its result: say it failed.
                break Some(false);
            }
            if let Some(&(_, ok)) = d.done.iter().find(|(upto, _)| *upto >= ticket) {
                break Some(ok);
            }
            if !d.running {
                break None;
            }
            g = self.finished.wait(g).unwrap_or_else(|e| e.into_inner());
        };
        let r = match r {
            Some(ok) => ok.then_some(()).ok_or_else(shared_failure),
            None => {
                let d = g.get_mut(key).expect("entry kept while inside");
                d.running = true;
                let upto = d.tickets;
                drop(g);
                let r = run();
                g = self.lock();
                let d = g.get_mut(key).expect("entry kept while inside");
                d.running = false;
                d.done.push_back((upto, r.is_ok()));
                if d.done.len() > HISTORY {
                    d.forgotten = d.done.pop_front().map_or(d.forgotten, |(u, _)| u);
                }
                self.finished.notify_all();
                r
            }
        };
        let d = g.get_mut(key).expect("entry kept while inside");
        d.inside -= 1;
        if d.inside == 0 && !d.running {
            g.remove(key);
        }
        r
    }
}

fn shared_failure() -> io::Error {
    io::Error::other("the shared fsync of the directory failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    #[test]
    fn concurrent_callers_share_fsyncs_and_each_is_covered() {
        let s = Arc::new(DirSyncs::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let n = 16;
        let start = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (s, runs, start) = (s.clone(), runs.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let s2 = s.clone();
                    s.sync(Path::new("/m/new"), move || {
                        // The first fsync lasts until every caller has arrived (each is then
                        // waiting for it or covered by the next): no timing luck.
                        if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                            while s2.lock()[Path::new("/m/new")].inside < n {
                                std::thread::yield_now();
                            }
                        }
                        Ok(())
                    })
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap().is_ok());
        }
        let runs = runs.load(Ordering::SeqCst);
        assert!((1..n).contains(&runs), "{runs} fsyncs for {n} callers");
        assert!(s.lock().is_empty(), "nothing kept once everyone is out");
    }

    #[test]
    fn a_failed_fsync_fails_everyone_it_covered() {
        let s = Arc::new(DirSyncs::default());
        let (entered, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let leader = {
            let (s, entered, release) = (s.clone(), entered.clone(), release.clone());
            std::thread::spawn(move || {
                s.sync(Path::new("/m/new"), || {
                    entered.wait();
                    release.wait();
                    Ok(())
                })
            })
        };
        entered.wait();
        // While the first fsync runs, two more callers arrive; the next fsync fails.
        let followers: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    s.sync(Path::new("/m/new"), || Err(io::Error::other("EIO")))
                })
            })
            .collect();
        while s.lock()[Path::new("/m/new")].inside < 3 {
            std::thread::yield_now();
        }
        release.wait();
        assert!(leader.join().unwrap().is_ok());
        for f in followers {
            assert!(f.join().unwrap().is_err(), "covered by the failed fsync");
        }
    }

    #[test]
    fn different_directories_do_not_share() {
        let s = DirSyncs::default();
        let mut ran = 0;
        s.sync(Path::new("/a/new"), || {
            ran += 1;
            Ok(())
        })
        .unwrap();
        s.sync(Path::new("/b/new"), || {
            ran += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(ran, 2);
    }
}
