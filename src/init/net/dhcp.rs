//! A DHCPv4 client (RFC 2131, options from RFC 2132): DISCOVER → OFFER → REQUEST → ACK on a
//! UDP socket bound to port 68 of one interface, broadcast both ways, and renewal at T1.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use super::NetError;

/// The magic cookie that starts the options (RFC 2131 §3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Offset of the options field (the fixed BOOTP fields end at the cookie).
const OPTIONS_AT: usize = 240;
/// BOOTP's minimum message size (RFC 1542 §2.1); shorter requests are padded.
const MIN_SIZE: usize = 300;
/// The broadcast bit of `flags` (RFC 2131 §2, figure 2).
const FLAG_BROADCAST: u16 = 0x8000;

/// Option codes (RFC 2132).
mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETERS: u8 = 55;
    pub const RENEWAL_TIME: u8 = 58;
    pub const END: u8 = 255;
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// DHCPDISCOVER.
    Discover = 1,
    /// DHCPOFFER.
    Offer = 2,
    /// DHCPREQUEST.
    Request = 3,
    /// DHCPACK.
    Ack = 5,
    /// DHCPNAK.
    Nak = 6,
}

/// A reply that is not for us or not a DHCP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhcpError {
    /// Shorter than the fixed fields and the cookie.
    #[error("message of {0} bytes is too short")]
    Short(usize),
    /// Not a BOOTREPLY for our transaction and hardware address.
    #[error("not a reply to this client")]
    NotOurs,
    /// The magic cookie is missing.
    #[error("no DHCP magic cookie")]
    NoCookie,
    /// No (known) message type option.
    #[error("no usable message type")]
    NoType,
}

/// What a server said (an OFFER, ACK or NAK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The message type.
    pub kind: MessageType,
    /// `yiaddr`: the address offered.
    pub addr: Ipv4Addr,
    /// Option 54.
    pub server: Option<Ipv4Addr>,
    /// Option 1.
    pub mask: Option<Ipv4Addr>,
    /// Option 3 (the first router).
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 51, seconds.
    pub lease_secs: Option<u32>,
    /// Option 58, seconds.
    pub renew_secs: Option<u32>,
}

/// The transaction id this client uses: derived from the MAC, so it is stable for a VM.
pub fn xid(mac: &[u8; 6]) -> u32 {
    u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ 0x6432_7600
}

/// A client message (`op` BOOTREQUEST) of `kind`; `ciaddr` is set when renewing,
/// `requested`/`server` when requesting an offer (options 50 and 54).
pub fn encode(
    kind: MessageType,
    mac: &[u8; 6],
    secs: u16,
    ciaddr: Ipv4Addr,
    requested: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
    hostname: &str,
) -> Vec<u8> {
    let mut m = vec![0u8; OPTIONS_AT];
    m[0] = 1; // op: BOOTREQUEST
    m[1] = 1; // htype: Ethernet
    m[2] = 6; // hlen
    m[4..8].copy_from_slice(&xid(mac).to_be_bytes());
    m[8..10].copy_from_slice(&secs.to_be_bytes());
    m[10..12].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
    m[12..16].copy_from_slice(&ciaddr.octets());
    m[28..34].copy_from_slice(mac);
    m[236..240].copy_from_slice(&MAGIC_COOKIE);
    m.extend_from_slice(&[opt::MESSAGE_TYPE, 1, kind as u8]);
    let params = [
        opt::SUBNET_MASK,
        opt::ROUTER,
        opt::DNS,
        opt::LEASE_TIME,
        opt::SERVER_ID,
        opt::RENEWAL_TIME,
    ];
    m.extend_from_slice(&[opt::PARAMETERS, params.len() as u8]);
    m.extend_from_slice(&params);
    for (code, a) in [(opt::REQUESTED_IP, requested), (opt::SERVER_ID, server)] {
        if let Some(a) = a {
            m.extend_from_slice(&[code, 4]);
            m.extend_from_slice(&a.octets());
        }
    }
    if !hostname.is_empty() && hostname.len() < 64 {
        m.extend_from_slice(&[opt::HOSTNAME, hostname.len() as u8]);
        m.extend_from_slice(hostname.as_bytes());
    }
    m.push(opt::END);
    if m.len() < MIN_SIZE {
        m.resize(MIN_SIZE, opt::PAD);
    }
    m
}

/// The options of a message as `(code, value)`; stops at END or at a truncated option.
pub fn options(m: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut i = OPTIONS_AT;
    while i < m.len() {
        match m[i] {
            opt::PAD => i += 1,
            opt::END => break,
            code => {
                let Some(&len) = m.get(i + 1) else { break };
                let Some(v) = m.get(i + 2..i + 2 + len as usize) else {
                    break;
                };
                out.push((code, v));
                i += 2 + len as usize;
            }
        }
    }
    out
}

fn addr(v: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = v.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn secs(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// Decodes a server's reply to the client with hardware address `mac`.
pub fn decode(m: &[u8], mac: &[u8; 6]) -> Result<Reply, DhcpError> {
    if m.len() < OPTIONS_AT {
        return Err(DhcpError::Short(m.len()));
    }
    if m[0] != 2 || m[4..8] != xid(mac).to_be_bytes() || m[28..34] != mac[..] {
        return Err(DhcpError::NotOurs);
    }
    if m[236..240] != MAGIC_COOKIE {
        return Err(DhcpError::NoCookie);
    }
    let mut r = Reply {
        kind: MessageType::Nak,
        addr: addr(&m[16..20]).unwrap_or(Ipv4Addr::UNSPECIFIED),
        server: None,
        mask: None,
        router: None,
        dns: Vec::new(),
        lease_secs: None,
        renew_secs: None,
    };
    let mut kind = None;
    for (code, v) in options(m) {
        match code {
            opt::MESSAGE_TYPE => {
                kind = match v.first() {
                    Some(2) => Some(MessageType::Offer),
                    Some(5) => Some(MessageType::Ack),
                    Some(6) => Some(MessageType::Nak),
                    _ => None,
                }
            }
            opt::SUBNET_MASK => r.mask = addr(v),
            opt::ROUTER => r.router = addr(v),
            opt::DNS => r.dns = v.chunks_exact(4).filter_map(addr).collect(),
            opt::SERVER_ID => r.server = addr(v),
            opt::LEASE_TIME => r.lease_secs = secs(v),
            opt::RENEWAL_TIME => r.renew_secs = secs(v),
            _ => {}
        }
    }
    r.kind = kind.ok_or(DhcpError::NoType)?;
    Ok(r)
}

/// A UDP socket on 0.0.0.0:68 bound to `iface`, allowed to broadcast.
pub fn client_socket(iface: &str) -> Result<UdpSocket, NetError> {
    let err = |source| NetError::Socket(source);
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd we own; UdpSocket closes it.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let set = |level, name, val: *const libc::c_void, len: usize| {
        // SAFETY: `val` points to `len` readable bytes.
        let r = unsafe { libc::setsockopt(fd, level, name, val, len as libc::socklen_t) };
        if r < 0 {
            Err(err(io::Error::last_os_error()))
        } else {
            Ok(())
        }
    };
    let one_p = (&one as *const libc::c_int).cast();
    set(libc::SOL_SOCKET, libc::SO_REUSEADDR, one_p, 4)?;
    set(libc::SOL_SOCKET, libc::SO_BROADCAST, one_p, 4)?;
    set(
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        iface.as_ptr().cast(),
        iface.len(),
    )?;
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 68u16.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid sockaddr_in of its size.
    let r = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(sock)
}

/// One client conversation: the socket, the MAC and when it started.
pub struct Client {
    sock: UdpSocket,
    mac: [u8; 6],
    hostname: String,
    start: Instant,
}

const SERVER_PORT: u16 = 67;

impl Client {
    /// A client on `iface` with hardware address `mac`.
    pub fn new(iface: &str, mac: [u8; 6], hostname: &str) -> Result<Client, NetError> {
        Ok(Client {
            sock: client_socket(iface)?,
            mac,
            hostname: hostname.into(),
            start: Instant::now(),
        })
    }

    /// Sends a message to `to` (broadcast until the client has an address).
    fn send(
        &self,
        kind: MessageType,
        ciaddr: Ipv4Addr,
        req: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
        to: Ipv4Addr,
    ) -> Result<(), NetError> {
        let secs = self.start.elapsed().as_secs().min(u16::MAX.into()) as u16;
        let m = encode(kind, &self.mac, secs, ciaddr, req, server, &self.hostname);
        let to = SocketAddrV4::new(to, SERVER_PORT);
        self.sock.send_to(&m, to).map_err(NetError::Socket)?;
        Ok(())
    }

    /// Waits until `until` for a reply of one of `kinds`; others are skipped.
    fn wait(&self, until: Instant, kinds: &[MessageType]) -> Option<Reply> {
        let mut buf = [0u8; 1500];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = self
                .sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => match decode(&buf[..n], &self.mac) {
                    Ok(r) if kinds.contains(&r.kind) => return Some(r),
                    _ => {}
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return None
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// DISCOVER → OFFER → REQUEST → ACK, retransmitting (1, 2, 4, 4… s) until `deadline`.
    pub fn acquire(&self, deadline: Instant) -> Option<Reply> {
        let mut wait = Duration::from_secs(1);
        while Instant::now() < deadline {
            let until = (Instant::now() + wait).min(deadline);
            wait = (wait * 2).min(Duration::from_secs(4));
            let any = Ipv4Addr::UNSPECIFIED;
            let all = Ipv4Addr::BROADCAST;
            if self
                .send(MessageType::Discover, any, None, None, all)
                .is_err()
            {
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
                continue;
            }
            let Some(offer) = self.wait(until, &[MessageType::Offer]) else {
                continue;
            };
            let until = (Instant::now() + Duration::from_secs(2)).min(deadline);
            if self
                .send(
                    MessageType::Request,
                    any,
                    Some(offer.addr),
                    offer.server,
                    all,
                )
                .is_err()
            {
                continue;
            }
            match self.wait(until, &[MessageType::Ack, MessageType::Nak]) {
                Some(ack) if ack.kind == MessageType::Ack => return Some(ack),
                _ => continue,
            }
        }
        None
    }

    /// A renewing REQUEST for `addr` (RFC 2131 §4.3.2: `ciaddr` set, no options 50/54),
    /// unicast to the lease's `server` (broadcast if unknown); the ACK, if one comes within
    /// `patience`.
    pub fn renew(
        &self,
        addr: Ipv4Addr,
        server: Option<Ipv4Addr>,
        patience: Duration,
    ) -> Option<Reply> {
        let to = server.unwrap_or(Ipv4Addr::BROADCAST);
        self.send(MessageType::Request, addr, None, None, to).ok()?;
        self.wait(
            Instant::now() + patience,
            &[MessageType::Ack, MessageType::Nak],
        )
        .filter(|r| r.kind == MessageType::Ack)
    }
}

/// Seconds until renewal: option 58, else half the lease (RFC 2131 §4.4.5), else an hour.
pub fn renew_after(r: &Reply) -> Duration {
    let s = r.renew_secs.or(r.lease_secs.map(|l| l / 2)).unwrap_or(3600);
    Duration::from_secs(u64::from(s.max(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn a_discover_has_the_rfc_2131_fields_and_options() {
        let m = encode(
            MessageType::Discover,
            &MAC,
            3,
            Ipv4Addr::UNSPECIFIED,
            None,
            None,
            "web",
        );
        assert!(m.len() >= 300);
        assert_eq!(&m[0..4], &[1, 1, 6, 0]); // op, htype, hlen, hops
        assert_eq!(&m[4..8], &xid(&MAC).to_be_bytes());
        assert_eq!(&m[8..10], &[0, 3]); // secs
        assert_eq!(&m[10..12], &[0x80, 0]); // broadcast flag
        assert_eq!(&m[12..28], &[0; 16]); // ciaddr yiaddr siaddr giaddr
        assert_eq!(&m[28..34], &MAC);
        assert_eq!(&m[34..236], &[0; 202][..]); // chaddr padding, sname, file
        assert_eq!(&m[236..240], &[0x63, 0x82, 0x53, 0x63]);
        assert_eq!(&m[240..243], &[53, 1, 1]);
        let o = options(&m);
        assert!(o.contains(&(55, &[1, 3, 6, 51, 54, 58][..])));
        assert!(o.contains(&(12, &b"web"[..])));
        assert!(!o.iter().any(|(c, _)| *c == 50 || *c == 54));
    }

    #[test]
    fn a_request_names_the_offer_and_the_server() {
        let m = encode(
            MessageType::Request,
            &MAC,
            0,
            Ipv4Addr::UNSPECIFIED,
            Some(Ipv4Addr::new(10, 0, 2, 15)),
            Some(Ipv4Addr::new(10, 0, 2, 2)),
            "",
        );
        let o = options(&m);
        assert_eq!(o[0], (53, &[3][..]));
        assert!(o.contains(&(50, &[10, 0, 2, 15][..])));
        assert!(o.contains(&(54, &[10, 0, 2, 2][..])));
    }

    /// An ACK as QEMU's user-mode network sends it, built by hand from RFC 2131/2132.
    fn ack() -> Vec<u8> {
        let mut m = vec![0u8; 240];
        m[0] = 2;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&xid(&MAC).to_be_bytes());
        m[16..20].copy_from_slice(&[10, 0, 2, 15]);
        m[28..34].copy_from_slice(&MAC);
        m[236..240].copy_from_slice(&[99, 130, 83, 99]);
        m.extend_from_slice(&[53, 1, 5, 0, 54, 4, 10, 0, 2, 2, 51, 4, 0, 1, 0x51, 0x80]);
        m.extend_from_slice(&[1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2]);
        m.extend_from_slice(&[6, 8, 10, 0, 2, 3, 1, 1, 1, 1, 255, 0, 0]);
        m
    }

    #[test]
    fn an_ack_is_decoded() {
        let r = decode(&ack(), &MAC).unwrap();
        assert_eq!(
            r,
            Reply {
                kind: MessageType::Ack,
                addr: Ipv4Addr::new(10, 0, 2, 15),
                server: Some(Ipv4Addr::new(10, 0, 2, 2)),
                mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)],
                lease_secs: Some(86400),
                renew_secs: None,
            }
        );
        assert_eq!(renew_after(&r), Duration::from_secs(43200));
    }

    #[test]
    fn replies_to_others_and_broken_ones_are_refused() {
        let mut other = ack();
        other[33] ^= 1;
        assert_eq!(decode(&other, &MAC), Err(DhcpError::NotOurs));
        let mut request = ack();
        request[0] = 1;
        assert_eq!(decode(&request, &MAC), Err(DhcpError::NotOurs));
        let mut cookie = ack();
        cookie[236] = 0;
        assert_eq!(decode(&cookie, &MAC), Err(DhcpError::NoCookie));
        assert_eq!(decode(&ack()[..100], &MAC), Err(DhcpError::Short(100)));
        let mut no_type = ack();
        no_type[241] = 0xff; // PAD, then END where option 53 was
        no_type[240] = 0;
        assert_eq!(decode(&no_type, &MAC), Err(DhcpError::NoType));
        // A truncated option ends the list without reading past the end.
        let mut cut = ack()[..250].to_vec();
        cut.extend_from_slice(&[6, 200, 1]);
        assert!(options(&cut).iter().all(|(c, _)| *c != 6));
    }
}
