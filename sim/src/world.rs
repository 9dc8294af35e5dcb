//! Hosts with disks that survive crashes, for turmoil simulations.
//!
//! A turmoil host is rebuilt from its closure on every `bounce`; its [`Disk`] lives outside the
//! host, so each boot mounts the image the last crash left. The driver watches the running fs:
//! once it froze (the crash point was reached) the driver crashes the host in turmoil, keeps
//! the chosen persisted state as the new image, and bounces the host.

use std::sync::{Arc, Mutex};

use crate::fs::{Clock, Faults, Fired, Image, Persist, SimFs};

#[derive(Clone)]
pub struct Disk {
    inner: Arc<Mutex<DiskState>>,
    clock: Clock,
}

struct DiskState {
    image: Image,
    mounted: Option<SimFs>,
    /// Faults for the next boot only.
    next_faults: Faults,
    boots: u32,
    /// The next boot is a process restart, not a reboot: it sees the same page cache.
    restart: bool,
    /// Faults fired by the fs of earlier boots (each boot mounts a new fs).
    fired: Fired,
}

impl Disk {
    pub fn new(clock: Clock) -> Self {
        Self::with_image(Image::default(), clock)
    }
    /// A disk holding `image` (e.g. a prepared installation).
    pub fn with_image(image: Image, clock: Clock) -> Self {
        Disk {
            inner: Arc::new(Mutex::new(DiskState {
                image,
                mounted: None,
                next_faults: Faults::default(),
                boots: 0,
                restart: false,
                fired: Fired::default(),
            })),
            clock,
        }
    }
    fn st(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
    /// Faults armed for the next boot (e.g. a crash after the N-th operation).
    pub fn arm(&self, f: Faults) {
        self.st().next_faults = f;
    }
    /// Mount the current image (called by the host closure at each boot). After a process
    /// exit the running filesystem is kept as it is, pending operations and all.
    pub fn boot(&self) -> SimFs {
        let mut st = self.st();
        st.boots += 1;
        if std::mem::take(&mut st.restart) {
            if let Some(fs) = st.mounted.clone() {
                return fs;
            }
        }
        let fs = SimFs::from_image(st.image.clone(), self.clock.clone());
        fs.set_faults(std::mem::take(&mut st.next_faults));
        if let Some(old) = st.mounted.replace(fs.clone()) {
            st.fired += old.fired();
        }
        fs
    }

    /// The process exited while the machine stayed up: its next start sees the same files.
    pub fn process_exited(&self) {
        self.st().restart = true;
    }
    pub fn boots(&self) -> u32 {
        self.st().boots
    }
    /// True once the mounted fs reached its crash point.
    pub fn frozen(&self) -> bool {
        self.st().mounted.as_ref().is_some_and(SimFs::is_frozen)
    }
    /// The host went down: keep what `p` says reached the disk.
    pub fn crash(&self, p: &Persist) {
        let mut st = self.st();
        if let Some(fs) = st.mounted.take() {
            st.image = fs.crash_image(p);
            st.fired += fs.fired();
        }
    }
    /// Faults that fired over every boot so far (what a report should count).
    pub fn fired(&self) -> Fired {
        let st = self.st();
        let mut f = st.fired;
        if let Some(fs) = &st.mounted {
            f += fs.fired();
        }
        f
    }
    /// Change the image the next boot mounts (latent corruption while the machine is down).
    pub fn damage<R>(&self, f: impl FnOnce(&mut Image) -> R) -> R {
        f(&mut self.st().image)
    }
    /// The image a boot would mount now.
    pub fn image(&self) -> Image {
        self.st().image.clone()
    }
    /// The disk as the running host sees it (for final checks).
    pub fn live(&self) -> Option<SimFs> {
        self.st().mounted.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use mta::env::Fs;

    use super::*;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn disk_counts_fired_faults_across_boots() {
        let disk = Disk::new(Clock::new(1_000_000));
        disk.arm(Faults {
            read_eio_at: [1].into(),
            ..Faults::default()
        });
        let fs = disk.boot();
        fs.create_new(p("/a")).unwrap();
        assert!(fs.read(p("/a")).is_err());
        disk.crash(&Persist::All);
        disk.arm(Faults {
            fsync_fail_at: [1].into(),
            read_eio_at: [1].into(),
            ..Faults::default()
        });
        let fs = disk.boot();
        assert!(fs.sync_dir(p("/")).is_err());
        assert!(fs.read(p("/a")).is_err());
        let want = Fired {
            fsync: 1,
            read: 2,
            ..Fired::default()
        };
        assert_eq!(disk.fired(), want);
    }
}
