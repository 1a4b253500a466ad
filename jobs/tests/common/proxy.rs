//! A TCP proxy to PostgreSQL that can go silent: bytes are held, not forwarded, and sockets stay
//! open, as behind a dead peer or a network partition. For the tests of what a silent connection
//! must not hang (a writer, a job lock's liveness check).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weatherflow::config::DatabaseConfig;

/// The proxy: listens on 127.0.0.1 and forwards to the database's address.
pub struct Proxy {
    port: u16,
    silent: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy in front of the server `db` points at.
    pub async fn to_database(db: &DatabaseConfig) -> Self {
        let url = url::Url::parse(db.url.expose_secret()).unwrap();
        let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
        Self::start(upstream).await
    }

    /// `db` with its URL pointed at the proxy.
    pub fn database_config(&self, db: &DatabaseConfig) -> DatabaseConfig {
        let mut url = url::Url::parse(db.url.expose_secret()).unwrap();
        url.set_port(Some(self.port)).unwrap();
        let mut cfg = db.clone();
        cfg.url = SecretString::from(url.to_string());
        cfg
    }

    /// Holds every byte from now on (`true`), or forwards again (`false`).
    pub fn go_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(AtomicBool::new(false));
        let flag = silent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, flag) = (upstream.clone(), flag.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = pipe(cr, sw, flag.clone()) => {}
                        _ = pipe(sr, cw, flag) => {}
                    }
                });
            }
        });
        Proxy { port, silent }
    }
}

/// Copies `from` to `to`, holding each chunk while the proxy is silent.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while silent.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
