//! The kernel command line (`/proc/cmdline`) as d2v's init reads it: the `d2v.*` network
//! words, `root=PARTUUID=…`, `init=` and `rw`.

use std::net::Ipv4Addr;

/// A command-line word that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// `d2v.network=` names no known mode.
    #[error("d2v.network={0}: expected dhcp, static or none")]
    NetworkMode(String),
    /// `d2v.network=static` without `d2v.ip=`.
    #[error("d2v.network=static needs d2v.ip=ADDR/PREFIX")]
    MissingIp,
    /// `d2v.ip=` is not `ADDR/PREFIX` with a prefix of 0..=32.
    #[error("d2v.ip={0}: expected ADDR/PREFIX (10.0.0.5/24)")]
    Ip(String),
    /// `d2v.gateway=` or `d2v.dns=` is not an IPv4 address.
    #[error("{word}={value}: not an IPv4 address")]
    Address {
        /// `d2v.gateway` or `d2v.dns`.
        word: &'static str,
        /// The text found.
        value: String,
    },
    /// `root=PARTUUID=` is not a GUID.
    #[error("root=PARTUUID={0}: not a GUID")]
    PartUuid(String),
}

/// The words d2v's init reads, as written (checked by [`Cmdline::network`] and
/// [`Cmdline::root_partuuid`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// `d2v.network=`.
    pub network: Option<String>,
    /// `d2v.ip=`.
    pub ip: Option<String>,
    /// `d2v.gateway=`.
    pub gateway: Option<String>,
    /// `d2v.dns=`.
    pub dns: Option<String>,
    /// `root=` (the whole value, `PARTUUID=…` included).
    pub root: Option<String>,
    /// `init=`.
    pub init: Option<String>,
    /// `rw` (the last of `ro`/`rw` wins, as in the kernel).
    pub rw: bool,
}

/// How the network is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A DHCPv4 lease on the first Ethernet interface.
    Dhcp,
    /// Fixed addresses from the command line.
    Static(StaticNet),
    /// Only `lo`.
    None,
}

/// `d2v.network=static`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNet {
    /// The interface's address.
    pub addr: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default route, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Name servers for `/etc/resolv.conf`.
    pub dns: Vec<Ipv4Addr>,
}

/// Splits a command line into words: blanks separate them, double quotes group (and are
/// removed), as the kernel's `next_arg` does.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

impl Cmdline {
    /// Reads the words d2v's init uses; others are ignored, later words win. Words after
    /// `--` are the init's arguments, not the kernel's, and are ignored too.
    pub fn parse(text: &str) -> Cmdline {
        let mut c = Cmdline::default();
        for w in words(text) {
            if w == "--" {
                break;
            }
            let (key, value) = match w.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (w.as_str(), None),
            };
            match (key, value) {
                ("rw", None) => c.rw = true,
                ("ro", None) => c.rw = false,
                ("d2v.network", v @ Some(_)) => c.network = v,
                ("d2v.ip", v @ Some(_)) => c.ip = v,
                ("d2v.gateway", v @ Some(_)) => c.gateway = v,
                ("d2v.dns", v @ Some(_)) => c.dns = v,
                ("root", v @ Some(_)) => c.root = v,
                ("init", v @ Some(_)) => c.init = v,
                _ => {}
            }
        }
        c
    }

    /// Reads `/proc/cmdline` (an empty command line if it cannot be read).
    pub fn read() -> Cmdline {
        Cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
    }

    /// The network setup the words ask for (`dhcp` when `d2v.network=` is absent).
    pub fn network(&self) -> Result<Network, CmdlineError> {
        match self.network.as_deref().unwrap_or("dhcp") {
            "dhcp" => Ok(Network::Dhcp),
            "none" => Ok(Network::None),
            "static" => {
                let ip = self.ip.as_deref().ok_or(CmdlineError::MissingIp)?;
                let (addr, prefix) = parse_cidr(ip).ok_or_else(|| CmdlineError::Ip(ip.into()))?;
                let gateway = match &self.gateway {
                    Some(g) => Some(parse_addr("d2v.gateway", g)?),
                    None => None,
                };
                let dns = match &self.dns {
                    Some(d) => d
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| parse_addr("d2v.dns", s))
                        .collect::<Result<_, _>>()?,
                    None => Vec::new(),
                };
                Ok(Network::Static(StaticNet {
                    addr,
                    prefix,
                    gateway,
                    dns,
                }))
            }
            other => Err(CmdlineError::NetworkMode(other.into())),
        }
    }

    /// The unique partition GUID of `root=PARTUUID=…`, in text byte order; `None` when
    /// `root=` names the root another way (or not at all).
    pub fn root_partuuid(&self) -> Option<Result<[u8; 16], CmdlineError>> {
        let v = self.root.as_deref()?.strip_prefix("PARTUUID=")?;
        Some(crate::disk::gpt::parse_uuid(v).ok_or_else(|| CmdlineError::PartUuid(v.into())))
    }
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    let prefix: u8 = p.parse().ok().filter(|&p| p <= 32)?;
    Some((a.parse().ok()?, prefix))
}

fn parse_addr(word: &'static str, s: &str) -> Result<Ipv4Addr, CmdlineError> {
    s.parse().map_err(|_| CmdlineError::Address {
        word,
        value: s.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_blanks_and_group_in_quotes() {
        assert_eq!(
            words(" a  b=\"c d\"\te\n"),
            vec!["a", "b=c d", "e"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        );
        assert_eq!(words("\"\""), vec![String::new()]);
    }

    #[test]
    fn the_d2v_words_root_init_and_rw_are_read() {
        let c = Cmdline::parse(
            "BOOT_IMAGE=/vmlinuz root=PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4 ro \
             console=ttyS0 d2v.network=static d2v.ip=10.0.2.16/24 d2v.gateway=10.0.2.2 \
             d2v.dns=1.1.1.1,8.8.8.8 init=/.d2v/init rw -- init=/ignored",
        );
        assert!(c.rw);
        assert_eq!(c.init.as_deref(), Some("/.d2v/init"));
        let uuid = c.root_partuuid().unwrap().unwrap();
        assert_eq!(uuid[0], 0x0f);
        assert_eq!(uuid[15], 0xe4);
        assert_eq!(
            c.network().unwrap(),
            Network::Static(StaticNet {
                addr: Ipv4Addr::new(10, 0, 2, 16),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(8, 8, 8, 8)],
            })
        );
    }

    #[test]
    fn network_defaults_to_dhcp_and_bad_words_are_errors() {
        assert_eq!(Cmdline::parse("quiet").network(), Ok(Network::Dhcp));
        assert_eq!(
            Cmdline::parse("d2v.network=none").network(),
            Ok(Network::None)
        );
        assert_eq!(
            Cmdline::parse("d2v.network=wifi").network(),
            Err(CmdlineError::NetworkMode("wifi".into()))
        );
        assert_eq!(
            Cmdline::parse("d2v.network=static").network(),
            Err(CmdlineError::MissingIp)
        );
        assert_eq!(
            Cmdline::parse("d2v.network=static d2v.ip=10.0.0.1/33").network(),
            Err(CmdlineError::Ip("10.0.0.1/33".into()))
        );
        assert!(matches!(
            Cmdline::parse("d2v.network=static d2v.ip=10.0.0.1/8 d2v.gateway=x").network(),
            Err(CmdlineError::Address {
                word: "d2v.gateway",
                ..
            })
        ));
        assert_eq!(Cmdline::parse("root=/dev/sda1").root_partuuid(), None);
        assert_eq!(
            Cmdline::parse("root=PARTUUID=xyz").root_partuuid(),
            Some(Err(CmdlineError::PartUuid("xyz".into())))
        );
        assert!(!Cmdline::parse("rw ro").rw);
    }
}
