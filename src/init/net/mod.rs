//! The guest's network: `lo`, then the first Ethernet interface by DHCP, from the kernel
//! command line's static words, or not at all (see [`super::cmdline::Network`]).

pub mod dhcp;
pub mod ioctl;

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::cmdline::{Network, StaticNet};
use super::console::say;
use ioctl::IfSock;

/// A network setup step that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A socket could not be opened or used.
    #[error("socket: {0}")]
    Socket(#[source] io::Error),
    /// An interface ioctl failed.
    #[error("cannot {op} {iface}: {source}")]
    Ioctl {
        /// What was tried.
        op: &'static str,
        /// The interface.
        iface: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// No Ethernet interface appeared.
    #[error("no Ethernet interface")]
    NoInterface,
    /// No DHCP lease came.
    #[error("no DHCP lease on {0}")]
    NoLease(String),
    /// `/etc/resolv.conf` could not be written.
    #[error("/etc/resolv.conf: {0}")]
    Resolv(#[source] io::Error),
}

/// What the interface got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    /// The interface.
    pub iface: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Name servers.
    pub dns: Vec<Ipv4Addr>,
    /// `dhcp` or `static`.
    pub how: &'static str,
}

/// Brings `lo` up (the kernel gives it 127.0.0.1/8).
pub fn loopback_up() {
    if let Err(e) = IfSock::new().and_then(|s| s.set_up("lo")) {
        say(e);
    }
}

/// The Ethernet interface (`type` 1) with the lowest ifindex, waiting until `deadline` for
/// one to appear.
pub fn first_ethernet(deadline: Instant) -> Option<String> {
    loop {
        let mut found: Vec<(u32, String)> = std::fs::read_dir("/sys/class/net")
            .map(|d| d.flatten().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| {
                let read = |f: &str| std::fs::read_to_string(e.path().join(f)).ok();
                (read("type")?.trim() == "1").then_some(())?;
                let index = read("ifindex")?.trim().parse().ok()?;
                Some((index, e.file_name().to_string_lossy().into_owned()))
            })
            .collect();
        found.sort();
        if let Some((_, name)) = found.into_iter().next() {
            return Some(name);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mac_of(iface: &str) -> [u8; 6] {
    let text =
        std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).unwrap_or_default();
    let mut mac = [0u8; 6];
    for (m, h) in mac.iter_mut().zip(text.trim().split(':')) {
        *m = u8::from_str_radix(h, 16).unwrap_or(0);
    }
    mac
}

/// The text of `/etc/resolv.conf` for `dns`.
pub fn resolv_conf(dns: &[Ipv4Addr]) -> String {
    dns.iter().map(|d| format!("nameserver {d}\n")).collect()
}

/// Gives the interface its address (an error is fatal to the setup), then the default route
/// and `/etc/resolv.conf` (errors printed: the address alone is still useful).
fn apply(sock: &IfSock, c: &Configured) -> Result<(), NetError> {
    sock.set_addr(&c.iface, c.addr, c.prefix)?;
    if let Some(gw) = c.gateway {
        if let Err(e) = sock.add_default_route(&c.iface, gw) {
            say(format_args!("network: {e}"));
        }
    }
    if !c.dns.is_empty() {
        if let Err(e) = write_resolv_conf(&c.dns) {
            say(format_args!("network: {e}"));
        }
    }
    Ok(())
}

/// Writes `/etc/resolv.conf` (creating `/etc`); a link that cannot be written through (to a
/// resolver's file under a missing directory) is replaced by a file.
fn write_resolv_conf(dns: &[Ipv4Addr]) -> Result<(), NetError> {
    const PATH: &str = "/etc/resolv.conf";
    let text = resolv_conf(dns);
    let _ = std::fs::create_dir_all("/etc");
    if std::fs::write(PATH, &text).is_ok() {
        return Ok(());
    }
    let _ = std::fs::remove_file(PATH);
    std::fs::write(PATH, &text).map_err(NetError::Resolv)
}

/// Sets the network up as `network` says, waiting at most `timeout`; prints the outcome.
/// DHCP leases are renewed by a thread.
pub fn setup(network: &Network, timeout: Duration, hostname: &str) {
    if *network == Network::None {
        say("network: none (d2v.network=none)");
        return;
    }
    match configure(network, Instant::now() + timeout, hostname) {
        Ok(c) => {
            let dns: Vec<String> = c.dns.iter().map(|d| d.to_string()).collect();
            let gw = c.gateway.map_or("no gateway".into(), |g| g.to_string());
            say(format_args!(
                "network: {} {}/{} via {gw} ({}), dns {}",
                c.iface,
                c.addr,
                c.prefix,
                c.how,
                if dns.is_empty() {
                    "none".into()
                } else {
                    dns.join(",")
                }
            ));
        }
        Err(e) => {
            say(format_args!("network: {e}"));
            say(format_args!(
                "network did not come up within {} s; starting the app anyway",
                timeout.as_secs()
            ));
        }
    }
}

fn configure(network: &Network, deadline: Instant, hostname: &str) -> Result<Configured, NetError> {
    let iface = first_ethernet(deadline).ok_or(NetError::NoInterface)?;
    let sock = IfSock::new()?;
    sock.set_up(&iface)?;
    let c = match network {
        Network::Static(StaticNet {
            addr,
            prefix,
            gateway,
            dns,
        }) => Configured {
            iface,
            addr: *addr,
            prefix: *prefix,
            gateway: *gateway,
            dns: dns.clone(),
            how: "static",
        },
        _ => {
            let client = dhcp::Client::new(&iface, mac_of(&iface), hostname)?;
            let ack = client
                .acquire(deadline)
                .ok_or_else(|| NetError::NoLease(iface.clone()))?;
            let c = lease_config(&iface, &ack);
            let renew = renew_thread(client, c.clone(), ack.server, dhcp::renew_after(&ack));
            if let Err(e) = renew {
                say(format_args!("DHCP renewal thread: {e}"));
            }
            c
        }
    };
    apply(&sock, &c)?;
    Ok(c)
}

fn lease_config(iface: &str, ack: &dhcp::Reply) -> Configured {
    Configured {
        iface: iface.into(),
        addr: ack.addr,
        prefix: ack.mask.map_or(24, ioctl::mask_prefix),
        gateway: ack.router,
        dns: ack.dns.clone(),
        how: "dhcp",
    }
}

/// Renews the lease at T1 for as long as init runs; a changed lease is applied.
fn renew_thread(
    client: dhcp::Client,
    mut c: Configured,
    mut server: Option<Ipv4Addr>,
    first: Duration,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("dhcp-renew".into())
        .spawn(move || {
            let mut after = first;
            loop {
                std::thread::sleep(after);
                match client.renew(c.addr, server, Duration::from_secs(10)) {
                    Some(ack) => {
                        after = dhcp::renew_after(&ack);
                        server = ack.server.or(server);
                        let new = lease_config(&c.iface, &ack);
                        if new != c {
                            let r = IfSock::new().and_then(|s| apply(&s, &new));
                            if let Err(e) = r {
                                say(format_args!("DHCP renewal: {e}"));
                            }
                            c = new;
                        }
                    }
                    None => {
                        // No answer from the server: ask any server (REBINDING) next time.
                        server = None;
                        after = Duration::from_secs(60);
                    }
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_the_servers_in_order() {
        let dns = [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)];
        assert_eq!(
            resolv_conf(&dns),
            "nameserver 10.0.2.3\nnameserver 1.1.1.1\n"
        );
    }
}
