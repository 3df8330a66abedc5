//! The RabbitMQ side of the end-to-end tests: Debian's `rabbitmq-server`
//! as a private node of its own, on free loopback ports, with its state in
//! a temp dir, a plain listener (what the tests read and write through)
//! and a TLS one with a certificate from the test CA (what the bridge
//! uses), and a user whose password the bridge reads from a file.
//!
//! Erlang nodes find each other through epmd, which `erl` starts detached
//! and leaves running. The harness starts its own epmd on a port of its
//! own, in the foreground and in a process group it owns, before the node
//! (which then uses it rather than starting one); on drop it also stops
//! whatever still listens on that port, by the pid that holds it, never by
//! name, so no other node's epmd is touched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};

use crate::bridge::BridgeBroker;
use crate::process::wait_listening;
use crate::tls::{ca_file, server_cert};
use crate::{free_port, fresh_dir, Service};

/// How long the node may take to say it started (about 20 s here).
const BOOT: Duration = Duration::from_secs(90);

/// The user the node creates on its first boot, and its password, which
/// the bridge reads from a file and must never print.
pub const AMQP_USER: &str = "roomcast";
pub const AMQP_PASSWORD: &str = "amqp-test-password-7c1e";

/// A running private RabbitMQ node.
pub struct RabbitMq {
    node: Option<Service>,
    epmd: Service,
    epmd_port: u16,
    /// The plain AMQP listener.
    pub port: u16,
    /// The TLS listener, with the test CA's certificate.
    pub tls_port: u16,
    dir: PathBuf,
    /// Boots so far: each has its own log.
    boots: u32,
    /// The file holding [`AMQP_PASSWORD`], for `--amqp-password-file`.
    pub password_file: PathBuf,
}

/// The `rabbitmq-server` script (Debian's; `ROOMCAST_RABBITMQ` overrides).
pub fn rabbitmq_binary() -> PathBuf {
    std::env::var("ROOMCAST_RABBITMQ")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server"))
}

impl RabbitMq {
    /// Starts a node and waits until it has booted and listens on both ports.
    pub async fn start() -> RabbitMq {
        let dir = fresh_dir("rabbitmq");
        let epmd_port = free_port();
        let mut epmd = Command::new("epmd");
        epmd.args(["-port", &epmd_port.to_string()]);
        let epmd = Service::spawn("epmd", epmd, dir.join("epmd.log"));
        wait_listening(&format!("127.0.0.1:{epmd_port}"), &epmd).await;
        let (port, tls_port) = (free_port(), free_port());
        let cert = server_cert();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.ssl.1 = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n\
                 default_user = {AMQP_USER}\n\
                 default_pass = {AMQP_PASSWORD}\n",
                ca_file().display(),
                cert.cert.display(),
                cert.key.display(),
            ),
        )
        .expect("write rabbitmq.conf");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        let password_file = dir.join("amqp-password");
        std::fs::write(&password_file, format!("{AMQP_PASSWORD}\n")).expect("write the password");
        let mut rabbit = RabbitMq {
            node: None,
            epmd,
            epmd_port,
            port,
            tls_port,
            dir,
            boots: 0,
            password_file,
        };
        rabbit.boot().await;
        rabbit
    }

    /// Starts the node on this instance's ports and state, and waits for it.
    async fn boot(&mut self) {
        let dir = self.dir.clone();
        let mut cmd = Command::new(rabbitmq_binary());
        cmd.env("RABBITMQ_NODENAME", self.node_name())
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("HOME", &dir);
        self.boots += 1;
        let log = dir.join(format!("node-{}.log", self.boots));
        let node = Service::spawn("rabbitmq-server", cmd, log);
        node.wait_log("Starting broker... completed", BOOT).await;
        wait_listening(&format!("127.0.0.1:{}", self.port), &node).await;
        wait_listening(&format!("127.0.0.1:{}", self.tls_port), &node).await;
        self.node = Some(node);
    }

    /// The node's process group: tests stop it or freeze it.
    pub fn node(&self) -> &Service {
        self.node.as_ref().expect("the node runs")
    }

    /// Stops the node (SIGTERM, a clean shutdown; SIGKILL after 30 s) and
    /// starts it again on the same ports and state.
    pub async fn restart(&mut self) {
        self.stop_node().await;
        self.boot().await;
    }

    /// Stops the node cleanly (SIGKILL after 30 s), keeping its state.
    pub async fn stop_node(&mut self) {
        if let Some(mut node) = self.node.take() {
            node.signal("TERM");
            if node.exited_within(Duration::from_secs(30)).await.is_none() {
                node.stop();
            }
        }
    }

    /// A plain URL with the test user's credentials, for the tests' own clients.
    pub fn url(&self) -> String {
        format!(
            "amqp://{AMQP_USER}:{AMQP_PASSWORD}@127.0.0.1:{}/%2f",
            self.port
        )
    }

    /// A connection of the test's own, on the plain listener.
    pub async fn connect(&self) -> Connection {
        let url = self.url();
        tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(&url, ConnectionProperties::default()),
        )
        .await
        .expect("connecting within 10 s")
        .unwrap_or_else(|e| panic!("connect to RabbitMQ: {e}\n{}", self.node().log_tail()))
    }

    /// A channel of a fresh connection of the test's own.
    pub async fn channel(&self) -> (Connection, Channel) {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.expect("a channel");
        (connection, channel)
    }

    /// Runs `rabbitmqctl` against this node (its name, epmd and cookie)
    /// and returns its output; panics when it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        let ctl = rabbitmq_binary().with_file_name("rabbitmqctl");
        let output = Command::new(&ctl)
            .args(["-n", &self.node_name()])
            .args(args)
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("HOME", &self.dir)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", ctl.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "rabbitmqctl {args:?}: {text}");
        text
    }

    fn node_name(&self) -> String {
        format!("roomcast{}@localhost", self.port)
    }

    /// The directory of the node's state and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl RabbitMq {
    /// The test user's URL without its password (the bridge reads that
    /// from [`RabbitMq::password_file`]): `amqps://` on the TLS listener,
    /// or `amqp://` on the plain one.
    pub fn bridge_url(&self, tls: bool) -> String {
        match tls {
            true => format!("amqps://{AMQP_USER}@127.0.0.1:{}/%2f", self.tls_port),
            false => format!("amqp://{AMQP_USER}@127.0.0.1:{}/%2f", self.port),
        }
    }
}

impl BridgeBroker for RabbitMq {
    /// `--broker amqp` over TLS to the test user, the password from a file.
    fn bridge_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["--broker".to_owned(), "amqp".to_owned()];
        if !extra.contains(&"--amqp-url") {
            args.push("--amqp-url".into());
            args.push(self.bridge_url(true));
        }
        if !extra.contains(&"--amqp-password-file") {
            args.push("--amqp-password-file".into());
            args.push(self.password_file.display().to_string());
        }
        args
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        if let Some(mut node) = self.node.take() {
            node.stop();
        }
        self.epmd.stop();
        // An epmd the node started itself after all (detached, in a group of
        // its own) holds the port still: stop it by its pid.
        for pid in listening_pids(self.epmd_port) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // A node's state is tens of megabytes; a failing test keeps it
        // (and the node's logs) for whoever looks into the failure.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The pids of the processes holding a listening TCP socket on `port`
/// (from /proc: the socket's inode, then the fds that point at it).
fn listening_pids(port: u16) -> Vec<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let listening = *state == "0A";
            let on_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening && on_port {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    let mut pids = Vec::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
        });
        if holds && pid != std::process::id() {
            pids.push(pid);
        }
    }
    pids
}
