//! Reading a secret the way a login screen does: at a terminal, after a prompt and without
//! echoing what is typed; from a pipe, a line as it comes (scripts, tests).

use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::AsFd;

use rustix::termios::{LocalModes, OptionalActions, Termios, tcgetattr, tcsetattr};
use zeroize::Zeroizing;

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading standard input: {0}")]
    Io(#[from] std::io::Error),
    #[error("no password on standard input")]
    Ended,
}

/// A line of `input`, without its line end. The end of the input before any line is an
/// error, never an empty secret.
pub fn read_line(input: &mut impl BufRead) -> Result<Zeroizing<String>, ReadError> {
    let mut line = Zeroizing::new(String::new());
    if input.read_line(&mut line)? == 0 {
        return Err(ReadError::Ended);
    }
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// The terminal `fd` with echo off until this is dropped, when its settings are put back as
/// they were (also when the read in between failed).
pub struct EchoOff<Fd: AsFd> {
    fd: Fd,
    saved: Termios,
}

impl<Fd: AsFd> EchoOff<Fd> {
    pub fn new(fd: Fd) -> std::io::Result<EchoOff<Fd>> {
        let saved = tcgetattr(&fd)?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(&fd, OptionalActions::Now, &quiet)?;
        Ok(EchoOff { fd, saved })
    }
}

impl<Fd: AsFd> Drop for EchoOff<Fd> {
    fn drop(&mut self) {
        // Nothing better to do with a failure here than to leave the terminal as it is.
        let _ = tcsetattr(&self.fd, OptionalActions::Now, &self.saved);
    }
}

/// A secret from standard input: at a terminal, `prompt` on standard error and the line read
/// with echo off; otherwise a line of `input` as it comes.
pub fn secret(prompt: &str, input: &mut impl BufRead) -> Result<Zeroizing<String>, ReadError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return read_line(input);
    }
    let mut stderr = std::io::stderr();
    write!(stderr, "{prompt}")?;
    stderr.flush()?;
    let read = {
        let _quiet = EchoOff::new(stdin.as_fd())?;
        read_line(input)
    };
    // The newline the user typed was not echoed.
    writeln!(stderr)?;
    read
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

    #[test]
    fn echo_is_off_while_reading_and_back_as_it_was_after() {
        let controller = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&controller).unwrap();
        unlockpt(&controller).unwrap();
        let name = ptsname(&controller, Vec::new()).unwrap();
        let terminal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        let echoing = |fd: &std::fs::File| {
            tcgetattr(fd)
                .unwrap()
                .local_modes
                .contains(LocalModes::ECHO)
        };
        assert!(echoing(&terminal), "a new terminal echoes");
        let before = tcgetattr(&terminal).unwrap();
        {
            let _quiet = EchoOff::new(&terminal).unwrap();
            assert!(!echoing(&terminal));
        }
        assert!(echoing(&terminal));
        let after = tcgetattr(&terminal).unwrap();
        assert_eq!(after.local_modes, before.local_modes);
        assert_eq!(after.input_modes, before.input_modes);
    }

    #[test]
    fn a_line_is_read_without_its_end_and_no_line_is_an_error() {
        let mut input = "secret-one\r\nsecret-two\n".as_bytes();
        assert_eq!(*read_line(&mut input).unwrap(), "secret-one");
        assert_eq!(*read_line(&mut input).unwrap(), "secret-two");
        assert!(matches!(read_line(&mut input), Err(ReadError::Ended)));
        assert_eq!(*read_line(&mut "\n".as_bytes()).unwrap(), "");
    }
}
