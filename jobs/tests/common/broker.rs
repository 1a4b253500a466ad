//! A single-node Kafka broker of the test's own, for the tests that must stop one: the shared broker
//! of `scripts/services.sh` serves every other test. It runs through `scripts/lib/kafka-node.sh`
//! (the fault stage's broker) on free ports, with its state in a scratch directory, and is killed and
//! removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The running broker.
pub struct OwnBroker {
    /// Its client port on 127.0.0.1.
    pub port: u16,
    state: PathBuf,
    controller: u16,
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The jars `scripts/services.sh up` fetched: `$SERVICES_JARS` (default `~/.cache/weatherflow`)
/// `/kafka-<version of scripts/kafka/pom.xml>/libs`.
fn kafka_libs(repo: &Path) -> PathBuf {
    let pom = std::fs::read_to_string(repo.join("scripts/kafka/pom.xml")).expect("scripts/kafka/pom.xml");
    let version = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|s| s.split("</kafka.version>").next())
        .expect("kafka.version in the pom");
    let jars = std::env::var("SERVICES_JARS").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/weatherflow"),
        PathBuf::from,
    );
    jars.join(format!("kafka-{version}/libs"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl OwnBroker {
    /// Starts a broker and waits until it serves (a JVM: 10-30 s on a loaded machine).
    pub fn start() -> Self {
        let broker = Self {
            port: free_port(),
            controller: free_port(),
            state: super::scratch_dir("broker"),
        };
        let started = broker.node("kn_start && kn_wait_ready 120");
        assert!(
            started,
            "the test's broker did not start; its log: {}",
            std::fs::read_to_string(broker.state.join("broker.log")).unwrap_or_default()
        );
        broker
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill(&self) {
        assert!(self.node("kn_kill"), "killing the test's broker");
    }

    /// Runs `script` with the node library sourced and this broker's variables; whether it passed.
    fn node(&self, script: &str) -> bool {
        let repo = repo();
        Command::new("bash")
            .arg("-c")
            .arg(format!("set -e; source scripts/lib/kafka-node.sh; {script}"))
            .current_dir(&repo)
            .env("KN_LIBS", kafka_libs(&repo))
            .env("KN_STATE", &self.state)
            .env("KN_PORT", self.port.to_string())
            .env("KN_CONTROLLER_PORT", self.controller.to_string())
            .env("KN_HEAP", "256m")
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.node("kn_kill");
        let _ = std::fs::remove_dir_all(&self.state);
    }
}
