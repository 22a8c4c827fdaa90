// A 16450-style UART at COM1 (0x3f8) carrying the kernel console to a log file. Enough of the
// register set for Linux's 8250 driver to detect it (scratch and loopback tests) and to drive
// transmission by THR-empty interrupts; there is no input side.

use std::io::Write;
use std::sync::Arc;

use crate::sys::EventFd;

pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_LEN: u16 = 8;

const DATA: u16 = 0;
const IER: u16 = 1;
const IIR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const MSR: u16 = 6;
const SCR: u16 = 7;

const IER_THRI: u8 = 0x02;
const IIR_NO_INT: u8 = 0x01;
const IIR_THRI: u8 = 0x02;
const LCR_DLAB: u8 = 0x80;
const MCR_LOOP: u8 = 0x10;
const LSR_THRE_TEMT: u8 = 0x60;
const MSR_CTS_DSR_DCD: u8 = 0xb0;
/// Output is flushed at newlines and when this much is buffered.
const FLUSH_AT: usize = 4096;

pub struct Serial {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    thr_interrupt: bool,
    out: Option<Box<dyn Write + Send>>,
    buf: Vec<u8>,
    irq: Option<Arc<EventFd>>,
    pub bytes_out: u64,
}

impl Serial {
    pub fn new(out: Option<Box<dyn Write + Send>>, irq: Option<Arc<EventFd>>) -> Serial {
        Serial { ier: 0, lcr: 0x03, mcr: 0x08, scr: 0, dll: 0x0c, dlm: 0, thr_interrupt: false, out, buf: Vec::new(), irq, bytes_out: 0 }
    }

    fn raise_thr(&mut self) {
        if self.ier & IER_THRI != 0 {
            self.thr_interrupt = true;
            if let Some(irq) = &self.irq {
                irq.signal();
            }
        }
    }

    pub fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            let _ = out.write_all(&self.buf);
            let _ = out.flush();
        }
        self.buf.clear();
    }

    pub fn write(&mut self, offset: u16, v: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            DATA if dlab => self.dll = v,
            DATA => {
                if self.mcr & MCR_LOOP == 0 {
                    self.bytes_out += 1;
                    self.buf.push(v);
                    if v == b'\n' || self.buf.len() >= FLUSH_AT {
                        self.flush();
                    }
                }
                self.raise_thr();
            }
            IER if dlab => self.dlm = v,
            IER => {
                self.ier = v & 0x0f;
                self.raise_thr();
            }
            LCR => self.lcr = v,
            MCR => self.mcr = v & 0x1f,
            SCR => self.scr = v,
            _ => {}
        }
    }

    pub fn read(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            DATA if dlab => self.dll,
            DATA => 0,
            IER if dlab => self.dlm,
            IER => self.ier,
            IIR => {
                if self.thr_interrupt && self.ier & IER_THRI != 0 {
                    // Reading IIR clears a THR-empty interrupt (8250 semantics).
                    self.thr_interrupt = false;
                    IIR_THRI
                } else {
                    IIR_NO_INT
                }
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => LSR_THRE_TEMT,
            MSR => {
                if self.mcr & MCR_LOOP != 0 {
                    // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
                    let m = self.mcr;
                    ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
                } else {
                    MSR_CTS_DSR_DCD
                }
            }
            SCR => self.scr,
            _ => 0xff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn passes_linux_probes_and_writes_lines() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut s = Serial::new(Some(Box::new(Sink(got.clone()))), None);
        s.write(SCR, 0xa5);
        assert_eq!(s.read(SCR), 0xa5);
        s.write(MCR, MCR_LOOP | 0x0a);
        assert_eq!(s.read(MSR) & 0xf0, 0x90);
        s.write(MCR, 0x0b);
        s.write(LCR, LCR_DLAB);
        s.write(DATA, 0x01);
        assert_eq!(s.read(DATA), 0x01);
        s.write(LCR, 0x03);
        for b in b"hi\n" {
            s.write(DATA, *b);
        }
        assert_eq!(&*got.lock().unwrap(), b"hi\n");
        assert_eq!(s.read(LSR) & 0x60, 0x60);
        s.write(IER, IER_THRI);
        assert_eq!(s.read(IIR), IIR_THRI);
        assert_eq!(s.read(IIR), IIR_NO_INT);
    }
}
