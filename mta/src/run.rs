//! `mta run`: the receiver and the queue in one process on a real host.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use mta::control::{ControlDir, Rewrite};
use mta::env::real::RealEnv;
use mta::env::{Env, Listener, Net};
use mta::queue::{service, Config, Paths, Queue, QueueError};
use mta::send::manager::{Manager, Until};
use mta::smtpd::filter::{Commands, Filter, NoFilter};
use mta::smtpd::{self, Receiver, Settings, Stats};

const EXIT_TEMP: i32 = 111;

fn filter_for(s: &Settings) -> Arc<dyn Filter> {
    if s.filters.is_empty() {
        Arc::new(NoFilter)
    } else {
        Arc::new(Commands(s.filters.clone()))
    }
}

fn load(env: &RealEnv, root: &Path, listen: SocketAddr) -> Result<Settings, String> {
    let mut s =
        Settings::load(env.fs(), root).map_err(|e| format!("unable to read controls: {e}"))?;
    if !listen.ip().is_unspecified() && !s.local_ips.contains(&listen.ip()) {
        s.local_ips.push(listen.ip());
    }
    Ok(s)
}

pub fn run(env: RealEnv, root: &Path, listen: SocketAddr) -> i32 {
    let settings = match load(&env, root, listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mta run: {e}");
            return EXIT_TEMP;
        }
    };
    let rewrite = match Rewrite::load(&ControlDir::new(env.fs(), root)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mta run: unable to read controls: {e}");
            return EXIT_TEMP;
        }
    };
    let send_settings = match mta::send::manager::Settings::load(env.fs(), root) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mta run: unable to read controls: {e}");
            return EXIT_TEMP;
        }
    };
    let remote_cfg = match mta::remote::RemoteConfig::load(env.fs(), root) {
        Ok(mut c) => {
            if !listen.ip().is_unspecified() && !c.local_ips.contains(&listen.ip()) {
                c.local_ips.push(listen.ip());
            }
            c
        }
        Err(e) => {
            eprintln!("mta run: unable to read controls: {e}");
            return EXIT_TEMP;
        }
    };
    let servers =
        mta::dns::nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let resolver =
        mta::dns::Resolver::new(env.clone(), servers, std::time::Duration::from_secs(10));
    let remote: std::sync::Arc<dyn mta::send::manager::Remote<RealEnv>> =
        std::sync::Arc::new(mta::remote::Smtp {
            cfg: remote_cfg,
            resolver: std::sync::Arc::new(resolver),
        });
    let paths = Paths::new(root.join("queue"));
    let spool = smtpd::SpoolTo {
        paths: paths.clone(),
        cfg: Config::default(),
        threshold: smtpd::SPOOL_THRESHOLD,
    };
    let (queue, rec) = match Queue::open(env.clone(), paths, Config::default(), &rewrite) {
        Ok(q) => q,
        Err(QueueError::Locked) => {
            eprintln!(
                "mta run: another queue manager is running on {}",
                root.display()
            );
            return EXIT_TEMP;
        }
        Err(e) => {
            eprintln!("mta run: cannot open the queue: {e}");
            return EXIT_TEMP;
        }
    };
    tracing::info!(?rec, "queue recovered");
    // `mta queue flush` finds us through the pid in the lock file.
    let _ = std::fs::write(root.join("queue/lock"), format!("{}\n", std::process::id()));
    let (handle, inbox) = service::channel();
    let mut manager = Manager::new(env.clone(), queue, rewrite, send_settings, Some(remote));
    let (renv, rroot) = (env.clone(), root.to_path_buf());
    manager.reloader = Some(Box::new(move || {
        let rw = Rewrite::load(&ControlDir::new(renv.fs(), &rroot)).ok()?;
        let s = mta::send::manager::Settings::load(renv.fs(), &rroot).ok()?;
        Some((rw, s))
    }));
    // Deliveries block in fsync: the manager and its deliveries get a runtime of their own
    // with enough threads that concurrent deliveries' fsyncs overlap (the filesystem groups
    // them into shared journal commits) instead of queueing behind each other.
    let threads = send_threads(&manager_threads_hint(root));
    let (gone_tx, mut gone_rx) = tokio::sync::oneshot::channel::<bool>();
    let queue_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("mta-send")
            .enable_all()
            .build()
            .expect("queue runtime");
        let m = rt.block_on(manager.run(inbox, Until::HandlesGone));
        let _ = gone_tx.send(m.failed);
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mta run: cannot start: {e}");
            return EXIT_TEMP;
        }
    };
    let code = rt.block_on(async move {
        let listener = match env.net().listen(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mta run: cannot listen on {listen}: {e}");
                return EXIT_TEMP;
            }
        };
        let bound = listener.local_addr().map_or(listen, |a| a);
        println!("mta: listening on {bound}");
        let _ = std::io::stdout().flush();
        let (hup, term, int, alrm) = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::alarm()),
        ) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
            _ => {
                eprintln!("mta run: cannot install signal handlers");
                return EXIT_TEMP;
            }
        };
        let (mut hup, mut term, mut int, mut alrm) = (hup, term, int, alrm);
        let mut failed = false;
        let flusher = handle.clone();
        let (set_tx, set_rx) = watch::channel(Arc::new(settings.clone()));
        let (filter_tx, filter_rx) = watch::channel(filter_for(&settings));
        let (stop_tx, stop_rx) = watch::channel(false);
        let ptr = mta::dns::Resolver::new(
            env.clone(),
            mta::dns::nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
            std::time::Duration::from_secs(5),
        );
        let host_lookup: mta::smtpd::HostLookup = Arc::new(move |ip| {
            let ptr = ptr.clone();
            Box::pin(async move { ptr.host_of(ip).await })
        });
        let rx = Receiver {
            host_lookup: Some(host_lookup),
            env: env.clone(),
            settings: set_rx,
            queue: handle,
            spool,
            filter: filter_rx,
            stats: Arc::new(Stats::default()),
        };
        let server = tokio::spawn(smtpd::serve(rx, listener, stop_rx));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = alrm.recv() => flusher.flush(),
                _ = &mut gone_rx => {
                    // The queue log failed (e.g. an fsync error): what reached the disk is
                    // unknown until it is read again. Exit so a supervisor restarts us.
                    eprintln!("mta run: the queue failed; exiting so a restart can recover it");
                    failed = true;
                    break;
                }
                _ = hup.recv() => match load(&env, root, listen) {
                    Ok(s) => {
                        tracing::info!("control files reread");
                        let _ = filter_tx.send(filter_for(&s));
                        let _ = set_tx.send(Arc::new(s));
                        flusher.reload();
                    }
                    Err(e) => eprintln!("mta run: SIGHUP: {e}; keeping the old settings"),
                },
            }
        }
        let _ = stop_tx.send(true);
        let _ = server.await;
        drop(flusher);
        if failed {
            EXIT_TEMP
        } else {
            0
        }
    });
    drop(rt);
    let _ = queue_thread.join();
    code
}

/// Local delivery concurrency from control/concurrencylocal (qmail's default 10).
fn manager_threads_hint(root: &Path) -> usize {
    std::fs::read_to_string(root.join("control/concurrencylocal"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10)
}

/// One thread per concurrent local delivery plus one for the manager, within reason.
fn send_threads(local: &usize) -> usize {
    (local + 1).clamp(2, 64)
}
