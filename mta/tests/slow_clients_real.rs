//! Issue 9, slow and greedy SMTP clients, against the real `mta` binary over loopback TCP:
//! whole-command and whole-DATA deadlines (every single read arriving in time is not enough),
//! the per-address session limit, and `concurrencyincoming` slots coming free again.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Server;

fn mta() -> &'static str {
    env!("CARGO_BIN_EXE_mta")
}

/// `mta run` on a fresh installation for heaven.af.mil (user fred) with these control files.
fn start(controls: &[(&str, &str)]) -> Server {
    let root = tempfile::tempdir().unwrap();
    common::init(mta(), root.path(), "heaven.af.mil", "fred");
    for (f, text) in controls {
        std::fs::write(root.path().join("control").join(f), text).unwrap();
    }
    let mut cmd = Command::new(mta());
    cmd.args(["run", "--listen", "127.0.0.1:0", "--root"])
        .arg(root.path())
        .stderr(std::fs::File::create(root.path().join("stderr")).unwrap());
    let (child, addr) = common::spawn_listening(cmd);
    Server { child, addr, root }
}

/// A client connection with its line reader.
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn from(s: TcpStream) -> Client {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        Client { w: s, r }
    }

    fn connect(addr: SocketAddr) -> Client {
        Client::from(TcpStream::connect(addr).unwrap())
    }

    /// Connect from another loopback address (Linux routes all of 127/8 to lo).
    fn connect_from(local: &str, addr: SocketAddr) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let s = rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(format!("{local}:0").parse().unwrap()).unwrap();
            sock.connect(addr).await.unwrap().into_std().unwrap()
        });
        s.set_nonblocking(false).unwrap();
        Client::from(s)
    }

    /// One reply (all its lines); empty at EOF.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&l);
            if l.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.reply()
    }

    /// Send `bytes` one at a time, `every` apart, from another thread until the server
    /// answers (or closes); the answer and how long after the first byte it came.
    fn trickle(mut self, bytes: Vec<u8>, every: Duration) -> JoinHandle<(String, Duration)> {
        let mut w = self.w.try_clone().unwrap();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let writer = std::thread::spawn(move || {
                for b in bytes {
                    if w.write_all(&[b]).is_err() {
                        return;
                    }
                    std::thread::sleep(every);
                }
            });
            let got = self.reply();
            let took = t0.elapsed();
            let _ = self.w.shutdown(std::net::Shutdown::Both);
            let _ = writer.join();
            (got, took)
        })
    }
}

/// A command line that never ends within the test: `HELO xxxx…`.
fn endless_command() -> Vec<u8> {
    let mut v = b"HELO ".to_vec();
    v.extend(std::iter::repeat_n(b'x', 200));
    v
}

fn maildir_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("home/fred/Maildir/new"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn tmp_files(root: &Path) -> Vec<u64> {
    std::fs::read_dir(root.join("queue/tmp"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect()
}

/// A whole transaction; the reply to the final dot.
fn send_message(c: &mut Client, subject: &str) -> String {
    assert!(c.cmd("MAIL FROM:<a@b.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<fred@heaven.af.mil>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.cmd(&format!("Subject: {subject}\r\n\r\nhello\r\n."))
}

#[test]
fn a_trickled_command_is_cut_at_the_whole_command_deadline() {
    let srv = start(&[("timeoutsmtpd", "2\n")]);
    let mut c = Client::connect(srv.addr);
    assert!(c.reply().starts_with("220"));
    // Every read succeeds well inside timeoutsmtpd; the line just never ends.
    let (got, took) = c
        .trickle(endless_command(), Duration::from_millis(250))
        .join()
        .unwrap();
    assert_eq!(
        got,
        "421 command not received in time, closing connection (#4.4.2)\r\n"
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3500),
        "cut after {took:?}"
    );
}

#[test]
fn a_trickled_message_is_cut_and_nothing_of_it_is_kept() {
    // 2 s for any message, longer only at 1 MB/s: the 300 kB sent at once buy nothing more.
    let srv = start(&[
        ("timeoutsmtpd", "2\n"),
        ("timeoutdata", "2\n"),
        ("dataminrate", "1000000\n"),
    ]);
    let root = srv.root.path();
    let mut c = Client::connect(srv.addr);
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("MAIL FROM:<a@b.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<fred@heaven.af.mil>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    // Past the 256 KiB threshold the message streams into queue/tmp.
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..300 {
        c.w.write_all(line.as_bytes()).unwrap();
    }
    common::eventually("the spool file in queue/tmp", 20, || {
        tmp_files(root).iter().sum::<u64>() > 256 * 1024
    });
    let (got, took) = c
        .trickle(vec![b'y'; 200], Duration::from_millis(250))
        .join()
        .unwrap();
    assert_eq!(
        got,
        "421 message arriving too slowly, closing connection (#4.4.2)\r\n"
    );
    assert!(took < Duration::from_millis(3500), "cut after {took:?}");
    assert_eq!(tmp_files(root), Vec::<u64>::new(), "the spool file is gone");
    // A message sent afterwards is delivered, and it alone.
    let mut c = Client::connect(srv.addr);
    assert!(c.reply().starts_with("220"));
    assert!(send_message(&mut c, "after").starts_with("250"));
    common::eventually("delivery of the later message", 20, || {
        maildir_count(root) == 1
    });
    assert_eq!(tmp_files(root), Vec::<u64>::new());
    assert_eq!(maildir_count(root), 1);
}

#[test]
fn one_address_cannot_take_more_than_concurrencyperip_sessions() {
    let srv = start(&[("concurrencyperip", "3\n")]);
    let mut held: Vec<Client> = (0..3).map(|_| Client::connect(srv.addr)).collect();
    for c in &mut held {
        assert!(c.reply().starts_with("220"));
    }
    let mut fourth = Client::connect(srv.addr);
    assert_eq!(
        fourth.reply(),
        "421 too many connections from your address, closing connection (#4.3.2)\r\n"
    );
    assert_eq!(fourth.reply(), "", "and closed at once");
    // Another address is served, a full transaction.
    let mut other = Client::connect_from("127.0.0.2", srv.addr);
    assert!(other.reply().starts_with("220"));
    assert!(send_message(&mut other, "other").starts_with("250"));
    // One session ends: its address may open another.
    assert!(held.pop().unwrap().cmd("QUIT").starts_with("221"));
    let mut next = None;
    common::eventually("a session from 127.0.0.1 after one ended", 20, || {
        let mut c = Client::connect(srv.addr);
        next = c.reply().starts_with("220").then_some(c);
        next.is_some()
    });
    held.extend(next);
    // SIGHUP rereads the limit like every receiver setting.
    std::fs::write(srv.root.path().join("control/concurrencyperip"), "10\n").unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &srv.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    common::eventually("a fourth session after SIGHUP raised the limit", 20, || {
        Client::connect(srv.addr).reply().starts_with("220")
    });
    assert_eq!(held.len(), 3);
}

#[test]
fn slowloris_clients_free_their_concurrencyincoming_slots_at_the_deadline() {
    // Every slot taken by one address's trickling clients; no per-address limit, so only the
    // deadlines can give the slots back.
    let srv = start(&[
        ("timeoutsmtpd", "2\n"),
        ("concurrencyincoming", "2\n"),
        ("concurrencyperip", "0\n"),
    ]);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let mut c = Client::connect(srv.addr);
            assert!(c.reply().starts_with("220"));
            c.trickle(endless_command(), Duration::from_millis(250))
        })
        .collect();
    let mut busy = Client::connect(srv.addr);
    assert!(busy.reply().starts_with("421 too many sessions"));
    let t0 = Instant::now();
    let mut c = None;
    common::eventually("a normal client served", 10, || {
        let mut n = Client::connect(srv.addr);
        let ok = n.reply().starts_with("220");
        c = ok.then_some(n);
        ok
    });
    assert!(
        t0.elapsed() < Duration::from_millis(3500),
        "{:?}",
        t0.elapsed()
    );
    assert!(send_message(c.as_mut().unwrap(), "normal").starts_with("250"));
    for h in slow {
        assert!(h.join().unwrap().0.starts_with("421 command not received"));
    }
}
