//! A TCP proxy on 127.0.0.1 that can cut every stream through it: while cut, open connections are
//! closed and new ones are closed as soon as they are accepted, as a network partition between an
//! agent and the coordinator looks to both.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Error, Result};

/// Whether streams pass, and which cut the open ones belong to.
#[derive(Debug, Clone, Copy)]
struct State {
    open: bool,
    /// Raised by every cut; a connection ends when it changes.
    epoch: u64,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::io("binding the proxy"))?;
        let addr = listener.local_addr().map_err(Error::io("the proxy's address"))?;
        let (state, rx) = watch::channel(State { open: true, epoch: 0 });
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(listener, target, rx, accepted.clone()));
        Ok(Proxy {
            addr,
            state,
            accepted,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open stream and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.open = false;
            s.epoch += 1;
        });
    }

    /// Lets streams through again.
    pub fn restore(&self) {
        self.state.send_modify(|s| s.open = true);
    }

    /// Connections accepted so far (passed or refused).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    target: SocketAddr,
    state: watch::Receiver<State>,
    accepted: Arc<AtomicU64>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        let now = *state.borrow();
        if !now.open {
            drop(client);
            continue;
        }
        let mut state = state.clone();
        conns.spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(target).await else {
                return;
            };
            let mut client = client;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                _ = state.wait_for(|s| s.epoch != now.epoch) => {}
            }
        });
        while conns.try_join_next().is_some() {}
    }
}
