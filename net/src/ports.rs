//! The TCP sockets a node binds on its ports (the client port and the cluster port): the
//! reservation that learns the port and refuses one another process listens on, and each
//! shard's listener.
//!
//! Every one of them sets two options before it binds:
//!
//! - SO_REUSEPORT: every shard binds the same port and the kernel spreads connections over
//!   their listeners. It would also let another process of the same user listen on the port,
//!   which is why [`reserve`] first checks that nothing answers there.
//! - SO_REUSEADDR: a restarted node takes its port back while connections of its previous
//!   life still hold it: TIME-WAIT sockets of connections the server closed first (an HTTP
//!   request with `Connection: close`, a drained WebSocket), or connections a killed process
//!   left closing (FIN-WAIT-1 towards a client that stopped reading). Without it, Linux lets
//!   the new socket bind beside a TIME-WAIT socket (SO_REUSEPORT on both suffices), but not
//!   beside the other closing states unless the new process has the old one's user id. It is
//!   safe: for TCP, Linux's SO_REUSEADDR never lets a socket bind beside a *listening* one,
//!   only beside connections that are over, so it cannot make two brokers share a port.
//!
//! A listener is taken off the port (shut down) the moment it is dropped, which the accept
//! loop does when the node starts stopping. Closing its descriptor is not enough: the
//! io_uring accept still pending on it holds the socket until the ring is torn down, which
//! the kernel does asynchronously after the process is gone, so a restart right after a
//! graceful exit could find the old listener still answering (and [`reserve`] refuse).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use glommio::net::TcpStream;
use socket2::{Domain, Socket, Type};

/// Connections the kernel completes and queues per listener before the shard accepts them
/// (the kernel caps it at `net.core.somaxconn`). What glommio's own `bind` uses.
const LISTEN_BACKLOG: i32 = 1024;

/// How long [`reserve`] waits for whatever listens on the port to answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// How long [`reserve`] lets a listener it found on the port go away before it refuses the
/// port: a process killed with `kill -9` keeps its listeners for 10-50 ms after it is gone
/// (until the kernel tears its io_uring down), and a supervisor restarting it at once must
/// not be refused for that. A port another live process listens on is refused after it.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// How often [`reserve`] looks again meanwhile.
const PORT_RELEASE_POLL: Duration = Duration::from_millis(20);

/// Reserves `addr` (and learns the port when 0 was asked) with a socket that is bound but
/// never listens, so it receives no connections; each shard then binds the same port with a
/// [`Listener`]. Fails with `AddrInUse` when something still listens on `addr` after
/// [`PORT_RELEASE_WAIT`].
pub(crate) fn reserve(addr: SocketAddr) -> io::Result<Socket> {
    // SO_REUSEPORT would let us share a port another process of this user listens on;
    // refuse that plainly instead.
    if addr.port() != 0 {
        let mut probe = addr;
        if probe.ip().is_unspecified() {
            probe.set_ip(if addr.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let since = std::time::Instant::now();
        while std::net::TcpStream::connect_timeout(&probe, PROBE_TIMEOUT).is_ok() {
            if since.elapsed() >= PORT_RELEASE_WAIT {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "address already in use (something still listened on it after {} s)",
                        PORT_RELEASE_WAIT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(PORT_RELEASE_POLL);
        }
    }
    bound(addr)
}

/// A shard's listening socket on a node's port.
pub(crate) struct Listener {
    /// The socket, owned by glommio, which accepts through io_uring.
    accept: glommio::net::TcpListener,
    /// A second descriptor of the same socket, to shut it down when dropped (glommio's
    /// listener does not lend its descriptor).
    shut: Socket,
}

impl Listener {
    /// Binds `addr` (SO_REUSEADDR and SO_REUSEPORT, see the module docs) and listens. Must
    /// run inside a glommio executor, which then accepts its connections.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let socket = bound(addr)?;
        socket.listen(LISTEN_BACKLOG)?;
        let shut = socket.try_clone()?;
        Ok(Listener {
            accept: into_glommio(socket),
            shut,
        })
    }

    /// The next connection.
    pub(crate) async fn accept(&self) -> glommio::Result<TcpStream, ()> {
        self.accept.accept().await
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Off the port now: connections not yet accepted are reset, new ones refused, and the
        // port is free for a restart before this process ends (see the module docs). An error
        // means the socket is not listening any more, which is what is wanted.
        let _ = self.shut.shutdown(std::net::Shutdown::Read);
    }
}

/// A TCP socket bound on `addr` with SO_REUSEADDR and SO_REUSEPORT.
fn bound(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// Hands a listening socket to glommio, which owns it from then on. One of the crate's
/// `unsafe` places: glommio 0.9 takes a listener built elsewhere only as a raw descriptor.
#[allow(unsafe_code)]
fn into_glommio(listening: Socket) -> glommio::net::TcpListener {
    // SAFETY: `into_raw_fd` gives up the only ownership of an open, bound and listening TCP
    // socket, so glommio's listener becomes its sole owner and closes it once.
    unsafe { glommio::net::TcpListener::from_raw_fd(listening.into_raw_fd()) }
}

/// The workspace's test helper for waiting on a condition (one file for every test crate).
#[cfg(test)]
#[path = "../../tests/common/eventually.rs"]
mod test_support;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use test_support::eventually;

    /// Runs `f` on a glommio executor of its own thread (no pinning: any core may be busy).
    fn on_executor<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(1 << 20)
                .make()
                .expect("an executor")
                .run(async move { f() })
        })
        .join()
        .expect("the executor thread")
    }

    /// TCP sockets with local port `port` in TIME-WAIT (state 06 in /proc/net/tcp).
    fn time_wait_on(port: u16) -> usize {
        let local = format!(":{port:04X}");
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&local) && f[3] == "06"
            })
            .count()
    }

    /// A listener on a port whose previous listener closed a connection first (leaving a
    /// TIME-WAIT socket on the port) binds again at once, with both options set; and once
    /// dropped, nothing answers on the port even though its descriptor is still open.
    #[test]
    fn a_port_is_bound_again_beside_time_wait_and_released_on_drop() {
        let (port, kept) = on_executor(|| {
            let first = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = first.shut.local_addr().unwrap().as_socket().unwrap();
            assert!(first.shut.reuse_address().unwrap());
            assert!(first.shut.reuse_port().unwrap());
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            let std_listener = std::net::TcpListener::from(first.shut.try_clone().unwrap());
            let (mut served, _) = std_listener.accept().unwrap();
            // The server closes first; the client reads the end and closes too.
            served.write_all(b"bye").unwrap();
            drop(served);
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            drop(client);
            // A descriptor of the socket outlives the listener (as a pending io_uring accept
            // does after a process ends): the drop must still release the port.
            drop(first);
            (addr.port(), std_listener)
        });
        eventually("a TIME-WAIT socket", Duration::from_secs(10), || {
            time_wait_on(port) > 0
        });
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "the dropped listener still answered"
        );
        let reserved = reserve(addr).expect("the port reserved again beside TIME-WAIT");
        on_executor(move || {
            let again = Listener::bind(addr).expect("the port bound again beside TIME-WAIT");
            drop(reserved);
            assert!(std::net::TcpStream::connect(addr).is_ok(), "listens again");
            drop(again);
        });
        drop(kept);
    }

    /// [`reserve`] refuses a port a live listener holds, SO_REUSEADDR or not.
    #[test]
    fn reserve_refuses_a_port_something_listens_on() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = live.local_addr().unwrap();
        let err = reserve(addr).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
