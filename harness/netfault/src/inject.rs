//! Sending extra copies of packets: NFQUEUE gives one verdict per packet, so a duplicate is written to a raw
//! IPv4 socket (`IPPROTO_RAW`, which implies `IP_HDRINCL`) in the same network namespace. The copy carries
//! [`DUPLICATE_MARK`] (`SO_MARK`), so the chains let it through instead of
//! queueing it again.

use crate::rules::DUPLICATE_MARK;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{Ipv4Addr, SocketAddrV4};

/// A raw socket that sends whole IPv4 packets.
pub struct Injector {
    socket: Socket,
}

impl Injector {
    /// Open the raw socket (needs `CAP_NET_RAW`; the mark needs `CAP_NET_ADMIN`).
    pub fn new() -> Result<Injector, String> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))
            .map_err(|e| format!("cannot open a raw IPv4 socket for duplicates: {e}"))?;
        socket
            .set_mark(DUPLICATE_MARK)
            .map_err(|e| format!("cannot mark the duplicates' socket: {e}"))?;
        Ok(Injector { socket })
    }

    /// Send `packet`, a whole IPv4 packet, to its destination address.
    pub fn send(&self, packet: &[u8]) -> Result<(), String> {
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            return Err("not an IPv4 packet".into());
        }
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        self.socket
            .send_to(packet, &SockAddr::from(SocketAddrV4::new(dst, 0)))
            .map(|_| ())
            .map_err(|e| format!("cannot send a duplicate to {dst}: {e}"))
    }
}
