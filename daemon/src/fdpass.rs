//! Descriptors handed over the API socket (`SCM_RIGHTS`) on an upgraded connection: exec's
//! stdio, import's archive. The client sends them once, with one byte of data; the daemon reads
//! and writes them directly, with no copying through the socket.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Most descriptors one message may carry.
pub const MAX_FDS: usize = 3;

/// Sends `fds` with one byte on `socket`.
pub fn send_fds(socket: RawFd, fds: &[RawFd]) -> io::Result<()> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let iov = [io::IoSlice::new(b"x")];
    sendmsg::<()>(socket, &iov, &cmsg, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives exactly `N` descriptors (at most [`MAX_FDS`]) sent by [`send_fds`] on `socket`.
/// A non-blocking socket with nothing to read yet gives `WouldBlock`; a peer that hung up, or
/// sent another number of descriptors, an error saying so.
pub fn receive_fds<const N: usize>(socket: RawFd) -> io::Result<[OwnedFd; N]> {
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel installed these descriptors for us in recvmsg; nothing else
            // owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the client hung up before sending its descriptors",
        ));
    }
    fds.try_into().map_err(|v: Vec<OwnedFd>| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected {N} descriptor(s), got {}", v.len()),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_descriptor_arrives_and_reads_what_its_sender_wrote() {
        let (client, daemon) = UnixStream::pair().unwrap();
        let (reader, mut writer) = UnixStream::pair().unwrap();
        send_fds(client.as_raw_fd(), &[reader.as_raw_fd()]).unwrap();
        let [got] = receive_fds::<1>(daemon.as_raw_fd()).unwrap();
        writer.write_all(b"archive").unwrap();
        let mut got = std::fs::File::from(got);
        let mut buf = [0u8; 7];
        got.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"archive");
        drop(reader);
    }

    #[test]
    fn the_wrong_number_of_descriptors_or_none_is_refused() {
        let (client, daemon) = UnixStream::pair().unwrap();
        send_fds(client.as_raw_fd(), &[0, 1]).unwrap();
        let err = receive_fds::<1>(daemon.as_raw_fd()).unwrap_err();
        assert!(
            err.to_string().contains("expected 1 descriptor(s), got 2"),
            "{err}"
        );
        drop(client);
        let err = receive_fds::<1>(daemon.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }
}
