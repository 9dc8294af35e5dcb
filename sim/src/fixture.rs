//! World fixtures: the installation every simulated MTA host starts from, its paths, port
//! and start time. The bottom of the world layer: it imports only the simulated fs and env.

use std::path::{Path, PathBuf};

use mta::env::{Env, Fs, FsFile};
use mta::init::{self, InitOptions};

use crate::env::SimEnv;
use crate::fs::{Clock, Image, Persist, SimFs};

/// Simulated start time: 2026-01-01T00:00:00Z.
pub const T0_MS: u64 = 1_767_225_600_000;
/// The MTA hosts' clocks start at [`T0_MS`].
pub const EPOCH_MS: u64 = T0_MS;
/// Where every simulated host has its installation.
pub const ROOT: &str = "/mta";
/// The SMTP port of simulated hosts.
pub const PORT: u16 = 25;

/// A disk image with an installation and the given control files.
pub fn installation(controls: &[(&str, &str)]) -> Image {
    let clock = Clock::new(EPOCH_MS);
    let env = SimEnv::manual(SimFs::new(clock.clone()), clock, 0);
    let o = InitOptions {
        me: "heaven.af.mil".into(),
        users: vec!["fred".into(), "joe".into()],
        force: false,
        uid: 1000,
        gid: 1000,
        owners: Default::default(),
        queue_user: None,
        disabled: Default::default(),
    };
    init::init(&env, Path::new(ROOT), &o).expect("init");
    let fs = env.sim_fs();
    for (name, text) in controls {
        let p = Path::new(ROOT).join("control").join(name);
        let _ = fs.unlink(&p);
        let mut f = fs.create_new(&p).expect("control file");
        f.write_at(0, text.as_bytes()).expect("write");
        f.sync().expect("sync");
        fs.sync_dir(p.parent().expect("dir")).expect("sync dir");
    }
    fs.crash_image(&Persist::Synced)
}

pub fn root() -> PathBuf {
    PathBuf::from(ROOT)
}

/// An installation with users fred, joe and john, the given control files, and extra files
/// (path relative to the root, contents).
pub fn image(controls: &[(&str, &str)], files: &[(&str, &str)]) -> Image {
    let clock = Clock::new(EPOCH_MS);
    // Timeouts short enough for scripted peers (a scenario's own controls come later).
    let mut all = vec![("timeoutconnect", "10"), ("timeoutremote", "30")];
    all.extend_from_slice(controls);
    let base = installation(&all);
    let fs = SimFs::from_image(base, clock.clone());
    let env = SimEnv::manual(fs.clone(), clock, 0);
    // john: a third user, as in the PIC alias scenario.
    let home = root().join("home/john");
    for d in ["", "Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"] {
        let _ = fs.mkdir(&home.join(d));
    }
    let assign_p = root().join("users/assign");
    let assign = String::from_utf8(fs.read(&assign_p).unwrap()).unwrap();
    let h = home.display();
    let assign = assign.replace(".\n", &format!("=john:john:1003:1003:{h}:::\n.\n"));
    write(&env, &assign_p, &assign);
    for (p, text) in files {
        write(&env, &root().join(p), text);
    }
    fs.crash_image(&crate::fs::Persist::All)
}

fn write(env: &SimEnv, p: &Path, text: &str) {
    let fs = env.fs();
    let _ = fs.unlink(p);
    let mut f = fs.create_new(p).expect("create");
    f.write_at(0, text.as_bytes()).expect("write");
    f.sync().expect("sync");
    fs.sync_dir(p.parent().expect("parent")).expect("sync dir");
}

/// Every message file in the new/ and cur/ of every Maildir of an image: (path, bytes).
pub fn mailbox_files(img: &Image) -> Vec<(String, Vec<u8>)> {
    img.files()
        .into_iter()
        .filter(|(p, _)| p.contains("/Maildir/new/") || p.contains("/Maildir/cur/"))
        .collect()
}
