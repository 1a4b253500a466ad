//! TCP_NODELAY on the database connections.
//!
//! sqlx 0.9.0 no longer disables Nagle's algorithm on its sockets (transact-rs/sqlx#4335, fixed by
//! #4336 after the 0.9.0 release). Every request that ends with a small write after unacknowledged
//! data, such as a COPY (CopyData, then CopyDone) or the tail of a large Bind, then waits for
//! the server's delayed ACK: 40 ms on Linux. That capped a writer near 45 k rows/s whatever the
//! statement, and put every low-rate batch behind a 40 ms wait (`docs/performance.md`).
//!
//! sqlx gives no access to its sockets, so this sets the option on every TCP socket of the process
//! whose peer is the database port. It is idempotent (one `getpeername` per open file descriptor),
//! and runs after a writer acquires its connection whenever the pool's size changed or a second has
//! passed since the last run, so connections the pool opens later (after an outage) are covered
//! too. Remove it once a sqlx release sets TCP_NODELAY again.

/// [`on_sockets_to`], unless it ran less than a second ago for the same port and pool size. Every
/// batch calls this; the scan costs a directory listing and a system call per descriptor, so it
/// runs when the pool has grown or shrunk, and once a second for a connection replaced at the same
/// size (a miss costs latency on that connection for at most that second).
pub fn on_new_sockets_to(port: u16, connections: u32) {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    static LAST: Mutex<Option<(u16, u32, Instant)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((p, n, at)) = *last
        && p == port
        && n == connections
        && at.elapsed() < Duration::from_secs(1)
    {
        return;
    }
    on_sockets_to(port);
    *last = Some((port, connections, Instant::now()));
}

/// Sets TCP_NODELAY on this process's TCP sockets connected to `port`. Best effort: failures are
/// ignored, the only cost of a miss is latency.
#[cfg(target_os = "linux")]
pub fn on_sockets_to(port: u16) {
    use nix::sys::socket::{SockaddrLike, SockaddrStorage, getpeername, setsockopt, sockopt::TcpNoDelay};
    use std::os::fd::{BorrowedFd, RawFd};

    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            continue;
        };
        let Ok(peer) = getpeername::<SockaddrStorage>(fd) else {
            continue;
        };
        let peer_port = match peer.family() {
            Some(nix::sys::socket::AddressFamily::Inet) => peer.as_sockaddr_in().map(|a| a.port()),
            Some(nix::sys::socket::AddressFamily::Inet6) => peer.as_sockaddr_in6().map(|a| a.port()),
            _ => None,
        };
        if peer_port != Some(port) {
            continue;
        }
        // SAFETY: `fd` was listed as open a moment ago and is used for this one call only. If
        // another thread closed it meanwhile, the call fails with EBADF; if the number was reused,
        // it lands on another descriptor, where TCP_NODELAY is harmless or refused. Either way the
        // result is ignored.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = setsockopt(&borrowed, TcpNoDelay, &true);
    }
}

/// Not needed where sqlx's sockets cannot be found this way; Nagle's delay only costs latency.
#[cfg(not(target_os = "linux"))]
pub fn on_sockets_to(_port: u16) {}
