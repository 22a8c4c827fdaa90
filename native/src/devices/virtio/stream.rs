// The host end of a byte-stream device (console port, net frames): a non-blocking unix socket
// with a bounded outgoing buffer, so a slow reader applies backpressure to the guest's queue
// instead of blocking the device thread or growing memory without bound.

use std::io::{ErrorKind, Read};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;

use crate::sys;

/// Stop taking guest TX buffers while this much is waiting for the host reader.
pub const OUT_HIGH_WATER: usize = 256 * 1024;

pub struct HostStream {
    stream: Option<UnixStream>,
    out: Vec<u8>,
    /// The host closed its end (or it failed); guest output is then dropped.
    pub closed: bool,
}

impl HostStream {
    pub fn new(stream: Option<UnixStream>) -> HostStream {
        if let Some(s) = &stream {
            let _ = s.set_nonblocking(true);
        }
        let closed = stream.is_none();
        HostStream { stream, out: Vec::new(), closed }
    }

    pub fn connect(path: &str, what: &str) -> Result<HostStream, String> {
        let s = UnixStream::connect(path).map_err(|e| format!("cannot connect the {what} to {path}: {e} (is the supervisor listening?)"))?;
        Ok(HostStream::new(Some(s)))
    }

    pub fn fd(&self) -> Option<i32> {
        if self.closed {
            None
        } else {
            self.stream.as_ref().map(|s| s.as_raw_fd())
        }
    }

    pub fn can_accept(&self) -> bool {
        self.out.len() < OUT_HIGH_WATER
    }

    pub fn pending_out(&self) -> usize {
        self.out.len()
    }

    pub fn queue(&mut self, data: &[u8]) {
        if !self.closed {
            self.out.extend_from_slice(data);
        }
    }

    /// Writes as much buffered output as the socket takes now.
    pub fn flush(&mut self) {
        let Some(s) = self.stream.as_ref() else { return };
        let fd = s.as_raw_fd();
        while !self.out.is_empty() && !self.closed {
            let r = unsafe { sys::send(fd, self.out.as_ptr() as *const _, self.out.len(), sys::MSG_NOSIGNAL) };
            if r > 0 {
                self.out.drain(..r as usize);
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                ErrorKind::WouldBlock => break,
                ErrorKind::Interrupted => continue,
                _ => self.closed = true,
            }
        }
        if self.closed {
            self.out.clear();
        }
    }

    /// Reads what is available, up to `max` bytes, appending to `into`.
    pub fn read_into(&mut self, into: &mut Vec<u8>, max: usize) {
        let Some(s) = self.stream.as_mut() else { return };
        let start = into.len();
        into.resize(start + max, 0);
        let mut got = 0;
        loop {
            match s.read(&mut into[start + got..]) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    got += n;
                    if got == max {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        into.truncate(start + got);
    }

    /// Poll events for this stream: input only when `want_in`, output while data is waiting.
    pub fn events(&self, want_in: bool) -> i16 {
        let mut ev = 0;
        if want_in {
            ev |= sys::POLLIN;
        }
        if !self.out.is_empty() {
            ev |= sys::POLLOUT;
        }
        ev
    }
}
