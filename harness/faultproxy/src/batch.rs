//! Datagrams in batches on the UDP no-toxic path: every datagram already queued on a socket is
//! received before any is sent, and a run of them goes out in one sendmmsg(2) on Linux (one send
//! each elsewhere), so a busy flow costs fewer system calls than datagrams.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Most datagrams received before sending.
pub const BATCH_DATAGRAMS: usize = 32;
/// The largest UDP payload.
pub const DATAGRAM_MAX_BYTES: usize = 65_535;
/// A batch buffer: room for one largest datagram, plus small ones before it.
pub const BATCH_BUFFER_BYTES: usize = 2 * DATAGRAM_MAX_BYTES;

/// Datagrams received back to back into one buffer: their ends and senders.
pub struct Batch {
    pub buffer: Vec<u8>,
    /// (end offset in `buffer`, sender) of each datagram; each starts where the previous ended.
    pub datagrams: Vec<(usize, SocketAddr)>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            buffer: vec![0; BATCH_BUFFER_BYTES],
            datagrams: Vec::with_capacity(BATCH_DATAGRAMS),
        }
    }

    /// Waits for one datagram, then takes every one already queued while room is left.
    pub async fn receive_from(&mut self, socket: &UdpSocket) -> std::io::Result<()> {
        self.datagrams.clear();
        let (len, from) = socket.recv_from(&mut self.buffer).await?;
        self.datagrams.push((len, from));
        let mut end = len;
        while self.datagrams.len() < BATCH_DATAGRAMS
            && self.buffer.len() - end >= DATAGRAM_MAX_BYTES
        {
            match socket.try_recv_from(&mut self.buffer[end..]) {
                Ok((len, from)) => {
                    end += len;
                    self.datagrams.push((end, from));
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// The payloads of datagrams `range`, in order.
    pub fn payloads(&self, range: std::ops::Range<usize>) -> Vec<&[u8]> {
        range
            .map(|i| {
                let start = if i == 0 { 0 } else { self.datagrams[i - 1].0 };
                &self.buffer[start..self.datagrams[i].0]
            })
            .collect()
    }
}

/// Sends `datagrams` in order on `socket`, to `to` or to its connected peer. A datagram the
/// kernel refuses (an ICMP report of an earlier one) is dropped, as UDP drops.
pub async fn send_all(socket: &UdpSocket, to: Option<SocketAddr>, datagrams: &[&[u8]]) {
    if let [datagram] = datagrams {
        let _ = match to {
            Some(to) => socket.send_to(datagram, to).await,
            None => socket.send(datagram).await,
        };
        return;
    }
    send_many(socket, to, datagrams).await;
}

#[cfg(target_os = "linux")]
async fn send_many(socket: &UdpSocket, to: Option<SocketAddr>, datagrams: &[&[u8]]) {
    use std::io::IoSlice;

    use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
    use tokio::io::Interest;

    let mut sent = 0;
    while sent < datagrams.len() {
        if socket.writable().await.is_err() {
            return;
        }
        // The message headers hold raw pointers, so they are built for each call and never
        // kept across an await.
        let result = socket.try_io(Interest::WRITABLE, || {
            let to = to.map(SocketAddrAny::from);
            let slices: Vec<[IoSlice<'_>; 1]> = datagrams[sent..]
                .iter()
                .map(|datagram| [IoSlice::new(datagram)])
                .collect();
            let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = slices
                .iter()
                .map(|_| SendAncillaryBuffer::default())
                .collect();
            let mut messages: Vec<MMsgHdr<'_>> = slices
                .iter()
                .zip(controls.iter_mut())
                .map(|(slice, control)| match &to {
                    Some(to) => MMsgHdr::new_with_addr(to, slice, control),
                    None => MMsgHdr::new(slice, control),
                })
                .collect();
            Ok(sendmmsg(socket, &mut messages, SendFlags::empty())?)
        });
        match result {
            Ok(count) => sent += count.max(1),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            // The first datagram failed: drop it and send the rest.
            Err(_) => sent += 1,
        }
    }
}

#[cfg(not(target_os = "linux"))]
async fn send_many(socket: &UdpSocket, to: Option<SocketAddr>, datagrams: &[&[u8]]) {
    for datagram in datagrams {
        let _ = match to {
            Some(to) => socket.send_to(datagram, to).await,
            None => socket.send(datagram).await,
        };
    }
}
