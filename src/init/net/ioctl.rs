//! The interface ioctls of an `AF_INET` socket: flags (up), address, netmask and the
//! default route (`SIOCADDRT`), with the kernel's `ifreq` and `rtentry` layouts.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::NetError;

/// linux/route.h: the route is usable.
const RTF_UP: libc::c_ushort = 0x0001;
/// linux/route.h: the destination is reached through a gateway.
const RTF_GATEWAY: libc::c_ushort = 0x0002;

/// `struct ifreq` (linux/if.h): the name and a 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

/// `struct rtentry` (linux/route.h), x86-64 and other LP64 layouts.
#[repr(C)]
struct RtEntry {
    pad1: libc::c_ulong,
    dst: [u8; 16],
    gateway: [u8; 16],
    genmask: [u8; 16],
    flags: libc::c_ushort,
    pad2: libc::c_short,
    pad3: libc::c_ulong,
    pad4: *mut libc::c_void,
    metric: libc::c_short,
    dev: *mut libc::c_char,
    mtu: libc::c_ulong,
    window: libc::c_ulong,
    irtt: libc::c_ushort,
}

/// A `sockaddr_in` (16 bytes) for `addr`, port 0.
pub fn sockaddr_in(addr: Ipv4Addr) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    s[4..8].copy_from_slice(&addr.octets());
    s
}

/// The netmask of a prefix length (`24` → 255.255.255.0).
pub fn prefix_mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0),
    )
}

/// The prefix length of a netmask (its leading ones).
pub fn mask_prefix(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

/// An `AF_INET` datagram socket to configure interfaces with.
pub struct IfSock(OwnedFd);

impl IfSock {
    /// Opens the socket.
    pub fn new() -> Result<IfSock, NetError> {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(NetError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd we own.
        Ok(IfSock(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ioctl<T>(
        &self,
        req: libc::Ioctl,
        arg: &mut T,
        op: &'static str,
        iface: &str,
    ) -> Result<(), NetError> {
        // SAFETY: `arg` is the struct the request expects.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), req, arg as *mut T) } < 0 {
            return Err(NetError::Ioctl {
                op,
                iface: iface.into(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn ifreq(iface: &str) -> IfReq {
        let mut r = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        let n = iface.len().min(libc::IFNAMSIZ - 1);
        r.name[..n].copy_from_slice(&iface.as_bytes()[..n]);
        r
    }

    /// Sets `IFF_UP` on `iface`.
    pub fn set_up(&self, iface: &str) -> Result<(), NetError> {
        let mut r = IfSock::ifreq(iface);
        self.ioctl(libc::SIOCGIFFLAGS, &mut r, "get flags of", iface)?;
        let flags = i16::from_ne_bytes([r.data[0], r.data[1]]) | libc::IFF_UP as i16;
        r.data[0..2].copy_from_slice(&flags.to_ne_bytes());
        self.ioctl(libc::SIOCSIFFLAGS, &mut r, "bring up", iface)
    }

    /// Gives `iface` the address `addr/prefix`.
    pub fn set_addr(&self, iface: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        let mut r = IfSock::ifreq(iface);
        r.data[..16].copy_from_slice(&sockaddr_in(addr));
        self.ioctl(libc::SIOCSIFADDR, &mut r, "set the address of", iface)?;
        r.data[..16].copy_from_slice(&sockaddr_in(prefix_mask(prefix)));
        self.ioctl(libc::SIOCSIFNETMASK, &mut r, "set the netmask of", iface)
    }

    /// Adds the default route via `gateway` on `iface` (an existing one is kept).
    pub fn add_default_route(&self, iface: &str, gateway: Ipv4Addr) -> Result<(), NetError> {
        let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
        for (d, s) in name.iter_mut().zip(iface.bytes().take(libc::IFNAMSIZ - 1)) {
            *d = s as libc::c_char;
        }
        let mut rt = RtEntry {
            pad1: 0,
            dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            gateway: sockaddr_in(gateway),
            genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            flags: RTF_UP | RTF_GATEWAY,
            pad2: 0,
            pad3: 0,
            pad4: std::ptr::null_mut(),
            metric: 0,
            dev: name.as_mut_ptr(),
            mtu: 0,
            window: 0,
            irtt: 0,
        };
        match self.ioctl(libc::SIOCADDRT, &mut rt, "add the default route on", iface) {
            Err(NetError::Ioctl { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_prefixes_convert_both_ways() {
        assert_eq!(prefix_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(prefix_mask(32), Ipv4Addr::BROADCAST);
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 240, 0)), 20);
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
    }
}
