//! POP3 inside the simulator: `mta run --listen-pop3` on a simulated host (logins through a
//! scripted checkpassword, the mailbox on the simulated disk), a client over turmoil's
//! network; then the machine crashes keeping only what was made durable, and a message is
//! gone exactly when the client's QUIT was answered `+OK`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mta::env::{Exit, Fs, FsFile};
use sim::fixture::{installation, root, EPOCH_MS};
use sim::fs::{Clock, Persist, SimFs};
use sim::host::MtaHost;
use sim::world::Disk;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const POP3: u16 = 110;

/// An installation whose checkpassword is scripted, with two messages in fred's new/.
fn disk() -> Disk {
    disk_with(&[], None)
}

/// [`disk`] with more control files and, given, fred's `users/assign` entry.
fn disk_with(controls: &[(&str, &str)], assign: Option<&str>) -> Disk {
    let mut all = vec![("checkpassword", "check\n")];
    all.extend_from_slice(controls);
    let img = installation(&all);
    let clock = Clock::new(EPOCH_MS);
    let fs = SimFs::from_image(img, clock.clone());
    if let Some(text) = assign {
        let p = root().join("users/assign");
        fs.unlink(&p).unwrap();
        let mut f = fs.create_new(&p).unwrap();
        f.write_at(0, text.as_bytes()).unwrap();
        f.sync().unwrap();
        fs.sync_dir(&root().join("users")).unwrap();
    }
    let new = root().join("home/fred/Maildir/new");
    for (name, text) in [
        ("100.a.sim", "Subject: one\n\n.dot\n"),
        ("200.b.sim", "Subject: two\n\nbody\n"),
    ] {
        let mut f = fs.create_new(&new.join(name)).unwrap();
        f.write_at(0, text.as_bytes()).unwrap();
        f.sync().unwrap();
    }
    fs.sync_dir(&new).unwrap();
    Disk::with_image(fs.crash_image(&Persist::Synced), clock)
}

fn host(disk: &Disk) -> MtaHost {
    host_seen(disk, Arc::default())
}

/// [`host`], keeping each boot's environment in `seen`.
fn host_seen(disk: &Disk, seen: Arc<std::sync::Mutex<Vec<sim::env::SimEnv>>>) -> MtaHost {
    let mut h = MtaHost::new("mta", disk.clone(), 7, false);
    h.listeners.pop3 = Some(SocketAddr::from(([0, 0, 0, 0], POP3)));
    h.setup = Some(Arc::new(move |env: &sim::env::SimEnv| {
        seen.lock().unwrap().push(env.clone());
        let cmd = "check".to_string();
        env.set_program(&cmd, |p| Exit {
            code: Some(if fred_secret(p) { 0 } else { 1 }),
            output: Vec::new(),
        });
    }));
    h
}

type Lines = tokio::io::Lines<BufReader<turmoil::net::TcpStream>>;

/// Send a command, return the first reply line (and for `multi`, the lines up to `.`).
async fn say(w: &mut Lines, cmd: &str, multi: bool) -> Vec<String> {
    if !cmd.is_empty() {
        let s = w.get_mut().get_mut();
        s.write_all(format!("{cmd}\r\n").as_bytes()).await.unwrap();
    }
    let mut out = vec![w.next_line().await.unwrap().expect("connection closed")];
    while multi && out[0].starts_with("+OK") && out.last().map(String::as_str) != Some(".") {
        out.push(w.next_line().await.unwrap().expect("connection closed"));
    }
    out
}

/// One session in a fresh world on `disk`: runs `dialogue` as the client.
fn session<F, Fut>(disk: &Disk, dialogue: F)
where
    F: FnOnce(Lines) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    session_on(host(disk), dialogue)
}

fn session_on<F, Fut>(host: MtaHost, dialogue: F)
where
    F: FnOnce(Lines) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(600))
        .build();
    host.install(&mut sim);
    let once = std::cell::RefCell::new(Some(dialogue));
    sim.client("client", async move {
        // The server is up once it accepts (it starts within the first simulated second).
        let to = SocketAddr::new(turmoil::lookup("mta"), POP3);
        let s = loop {
            match turmoil::net::TcpStream::connect(to).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let f = once.borrow_mut().take().unwrap();
        f(BufReader::new(s).lines()).await;
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn pop3_over_the_simulated_network_and_deletions_survive_a_crash_after_quit() {
    let disk = disk();
    session(&disk, |mut w| async move {
        assert!(say(&mut w, "", false).await[0].starts_with("+OK <"));
        say(&mut w, "USER fred", false).await;
        assert_eq!(
            say(&mut w, "PASS wrong", false).await[0],
            "-ERR authorization failed"
        );
        say(&mut w, "USER fred", false).await;
        assert_eq!(say(&mut w, "PASS secret", false).await[0], "+OK 2 messages");
        let uidl = say(&mut w, "UIDL", true).await;
        assert_eq!(uidl[1..], ["1 100.a.sim", "2 200.b.sim", "."]);
        let retr = say(&mut w, "RETR 1", true).await;
        assert_eq!(retr, ["+OK 22 octets", "Subject: one", "", "..dot", "."]);
        assert_eq!(say(&mut w, "DELE 1", false).await[0], "+OK");
        assert_eq!(say(&mut w, "QUIT", false).await[0], "+OK");
    });
    // The machine goes down with only what was made durable: the deletion was.
    disk.crash(&Persist::Synced);
    let files = disk.image().files();
    let names: Vec<&str> = files
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| p.contains("/home/fred/Maildir/"))
        .collect();
    assert_eq!(
        names,
        ["/mta/home/fred/Maildir/cur/200.b.sim:2,"],
        "{names:?}"
    );
    session(&disk, |mut w| async move {
        say(&mut w, "", false).await;
        say(&mut w, "USER fred", false).await;
        assert_eq!(say(&mut w, "PASS secret", false).await[0], "+OK 1 messages");
        assert_eq!(say(&mut w, "UIDL 1", false).await[0], "+OK 1 200.b.sim");
        assert_eq!(say(&mut w, "QUIT", false).await[0], "+OK");
    });
}

/// With `control/queueuser` the simulated server gives root up, as the real one does; POP3
/// logins go through the POP3 helper it started first, which works on fred's mailbox as
/// fred (uid 1003 here, not the queue user's 1000): without it the login would be refused.
#[test]
fn pop3_after_giving_root_up_goes_through_the_helper_as_the_mailbox_owner() {
    let fred = root().join("home/fred");
    let assign = format!("=fred:fred:1003:1003:{}:::\n.\n", fred.display());
    let disk = disk_with(&[("queueuser", "mtaq\n")], Some(&assign));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    session_on(host_seen(&disk, seen.clone()), |mut w| async move {
        say(&mut w, "", false).await;
        say(&mut w, "USER fred", false).await;
        assert_eq!(
            say(&mut w, "PASS wrong", false).await[0],
            "-ERR authorization failed"
        );
        say(&mut w, "USER fred", false).await;
        assert_eq!(say(&mut w, "PASS secret", false).await[0], "+OK 2 messages");
        let retr = say(&mut w, "RETR 1", true).await;
        assert_eq!(retr, ["+OK 22 octets", "Subject: one", "", "..dot", "."]);
        assert_eq!(say(&mut w, "DELE 1", false).await[0], "+OK");
        assert_eq!(say(&mut w, "QUIT", false).await[0], "+OK");
    });
    let env = seen.lock().unwrap()[0].clone();
    use mta::env::Env;
    assert_eq!(env.uid(), sim::fs::OWNER, "the server runs as mtaq");
    let who = mta::env::Creds {
        uid: 1003,
        gid: 1003,
    };
    let as_who = env.deliveries_as.lock().unwrap().clone();
    assert_eq!(
        as_who,
        [(who, fred)],
        "the mailbox was opened once, as fred"
    );
    disk.crash(&Persist::Synced);
    let files = disk.image().files();
    let left: Vec<&str> = files
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| p.contains("/home/fred/Maildir/"))
        .collect();
    assert_eq!(left, ["/mta/home/fred/Maildir/cur/200.b.sim:2,"]);
}

/// What the scripted checkpassword accepts on descriptor 3: fred's password `secret`.
fn fred_secret(p: &mta::env::Program) -> bool {
    p.fd3
        .as_ref()
        .is_some_and(|s| s.0.starts_with(b"fred\0secret\0"))
}
