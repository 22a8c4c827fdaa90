// The keyboard controller, only for its reset line: a guest booted with reboot=k writes 0xfe to
// port 0x64 to reset, which is how a healthy msb guest ends its VM.

pub const DATA_PORT: u16 = 0x60;
pub const COMMAND_PORT: u16 = 0x64;
const CMD_RESET_CPU: u8 = 0xfe;
/// Status: nothing to read, input buffer empty, self-test passed.
const STATUS_IDLE: u8 = 0x04;

pub struct I8042;

impl I8042 {
    pub fn read(&self, _port: u16) -> u8 {
        match _port {
            COMMAND_PORT => STATUS_IDLE,
            _ => 0,
        }
    }

    /// Returns true when the guest asked for a CPU reset.
    pub fn write(&self, port: u16, v: u8) -> bool {
        port == COMMAND_PORT && v == CMD_RESET_CPU
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reset_command_resets() {
        let k = I8042;
        assert!(k.write(COMMAND_PORT, 0xfe));
        assert!(!k.write(COMMAND_PORT, 0xd1));
        assert!(!k.write(DATA_PORT, 0xfe));
        assert_eq!(k.read(COMMAND_PORT) & 1, 0);
    }
}
