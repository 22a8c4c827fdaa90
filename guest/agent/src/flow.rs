// Per-stream flow-control credit (docs/protocol.md, "Flow control"): what the agent may still
// send as STDOUT/STDERR, and what the host may still send as STDIN and when to grant more.

use crate::frame::INITIAL_WINDOW;

/// Credit for data the agent sends (STDOUT and STDERR share it).
#[derive(Debug)]
pub struct SendCredit {
    available: u64,
}

impl Default for SendCredit {
    fn default() -> Self {
        SendCredit { available: INITIAL_WINDOW as u64 }
    }
}

impl SendCredit {
    pub fn available(&self) -> u64 {
        self.available
    }

    /// Most bytes the next data frame may carry, given the protocol's chunk limit.
    pub fn next_chunk(&self, max_chunk: usize) -> usize {
        self.available.min(max_chunk as u64) as usize
    }

    /// Spends credit for a frame about to be sent. Sending more than held is a bug.
    pub fn spend(&mut self, n: usize) {
        assert!(n as u64 <= self.available, "spending {n} bytes with only {} of credit", self.available);
        self.available -= n as u64;
    }

    /// A WINDOW from the host. Saturates: a host cannot overflow the counter.
    pub fn grant(&mut self, increment: u32) {
        self.available = self.available.saturating_add(increment as u64);
    }
}

/// Below this, consumed input is not yet granted back unless the buffer ran dry: WINDOW frames
/// then cost a few bytes per 64 KiB instead of one per STDIN frame.
pub const GRANT_BATCH: u64 = 64 * 1024;

/// Credit for data the host sends (STDIN): tracks what the host may still send and what the
/// agent has consumed (written into the pipe) but not yet granted back.
#[derive(Debug)]
pub struct RecvWindow {
    /// Bytes the host may send before it runs out of credit.
    outstanding: u64,
    /// Bytes consumed since the last WINDOW.
    ungranted: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Overrun {
    pub got: usize,
    pub allowed: u64,
}

impl Default for RecvWindow {
    fn default() -> Self {
        RecvWindow { outstanding: INITIAL_WINDOW as u64, ungranted: 0 }
    }
}

impl RecvWindow {
    /// Accounts for an arriving data frame; more than the host holds credit for is an error.
    pub fn receive(&mut self, n: usize) -> Result<(), Overrun> {
        if n as u64 > self.outstanding {
            return Err(Overrun { got: n, allowed: self.outstanding });
        }
        self.outstanding -= n as u64;
        Ok(())
    }

    /// Grants `n` more bytes of credit up front (a WINDOW the caller sends), beyond the default.
    pub fn widen(&mut self, n: u32) {
        self.outstanding += n as u64;
    }

    /// Records that `n` received bytes were consumed (their buffer space is free again).
    pub fn consume(&mut self, n: usize) {
        self.ungranted += n as u64;
    }

    /// The increment to send in a WINDOW now, if any. `drained` says the buffer is empty, in
    /// which case everything consumed is granted so the host never waits on a small remainder.
    pub fn take_grant(&mut self, drained: bool) -> Option<u32> {
        if self.ungranted == 0 || (!drained && self.ungranted < GRANT_BATCH) {
            return None;
        }
        let inc = self.ungranted.min(u32::MAX as u64) as u32;
        self.ungranted -= inc as u64;
        self.outstanding += inc as u64;
        Some(inc)
    }

    #[cfg(test)]
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MAX_CHUNK;

    #[test]
    fn send_credit_pauses_at_zero_and_resumes_on_grant() {
        let mut c = SendCredit::default();
        assert_eq!(c.available(), 262_144);
        assert_eq!(c.next_chunk(MAX_CHUNK), MAX_CHUNK);
        for _ in 0..4 {
            let n = c.next_chunk(MAX_CHUNK);
            c.spend(n);
        }
        assert_eq!(c.available(), 0);
        assert_eq!(c.next_chunk(MAX_CHUNK), 0, "no credit: the stream's pipes are not read");
        c.grant(1000);
        assert_eq!(c.next_chunk(MAX_CHUNK), 1000, "a chunk never exceeds the credit");
        c.grant(u32::MAX);
        c.grant(u32::MAX);
        assert_eq!(c.available(), 1000 + 2 * u32::MAX as u64);
    }

    #[test]
    #[should_panic]
    fn overspending_is_a_bug() {
        let mut c = SendCredit::default();
        c.spend(INITIAL_WINDOW as usize + 1);
    }

    #[test]
    fn recv_window_rejects_data_beyond_credit() {
        let mut w = RecvWindow::default();
        assert_eq!(w.receive(200_000), Ok(()));
        assert_eq!(w.receive(62_144), Ok(()));
        assert_eq!(w.outstanding(), 0);
        assert_eq!(w.receive(1), Err(Overrun { got: 1, allowed: 0 }));
        assert_eq!(w.receive(0), Ok(()), "an empty STDIN (EOF) costs nothing");
    }

    #[test]
    fn grants_are_batched_until_the_buffer_drains() {
        let mut w = RecvWindow::default();
        w.receive(100_000).unwrap();
        w.consume(10_000);
        assert_eq!(w.take_grant(false), None, "small and not drained: wait");
        w.consume(60_000);
        assert_eq!(w.take_grant(false), Some(70_000), "a full batch goes back at once");
        assert_eq!(w.outstanding(), 262_144 - 100_000 + 70_000);
        w.consume(30_000);
        assert_eq!(w.take_grant(true), Some(30_000), "drained: the remainder goes back");
        assert_eq!(w.take_grant(true), None, "nothing consumed, nothing granted");
        assert_eq!(w.outstanding(), 262_144, "everything received was eventually granted back");
    }

    #[test]
    fn credit_is_conserved_over_many_frames() {
        // The host sends as long as it holds credit; the agent consumes in odd sizes. Total
        // credit (outstanding + buffered + ungranted) stays at INITIAL_WINDOW throughout.
        let mut w = RecvWindow::default();
        let mut buffered = 0u64;
        let mut host_credit = INITIAL_WINDOW as u64;
        let mut sent = 0u64;
        let mut step = 0u64;
        while sent < 10_000_000 {
            step += 1;
            let n = host_credit.min(65_536).min(1 + step * 7919 % 65_536);
            if n > 0 {
                w.receive(n as usize).unwrap();
                host_credit -= n;
                buffered += n;
                sent += n;
            }
            let eat = buffered.min(step * 104_729 % 100_000);
            buffered -= eat;
            w.consume(eat as usize);
            if let Some(inc) = w.take_grant(buffered == 0) {
                host_credit += inc as u64;
            }
            assert_eq!(w.outstanding(), host_credit);
            assert!(buffered <= INITIAL_WINDOW as u64, "buffer bounded by the window");
            assert!(host_credit > 0 || buffered > 0, "deadlock: host has no credit and nothing is pending");
        }
    }
}
