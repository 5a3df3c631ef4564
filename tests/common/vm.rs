//! A running QEMU that holds an image open for writing, driven through its
//! human monitor on stdin and stdout: guest writes (`qemu-io`), `savevm`,
//! `delvm`, `quit`. Each command waits for the monitor's next prompt, which
//! QEMU prints once the command has completed.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// What the monitor prints when it waits for a command.
const PROMPT: &[u8] = b"(qemu) ";

/// The drive's id, as monitor commands name it.
pub const DRIVE: &str = "d0";

/// `qemu-system-x86_64 -M none` with one drive, `d0`, on an image.
pub struct Vm {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Vm {
    /// Start QEMU on a qcow2 image (it takes the image's write lock) and
    /// wait for the monitor's first prompt.
    pub fn start(img: &Path) -> Vm {
        let mut child = Command::new("qemu-system-x86_64")
            .args([
                "-M",
                "none",
                "-nodefaults",
                "-display",
                "none",
                "-monitor",
                "stdio",
                "-drive",
            ])
            .arg(format!(
                "if=none,id={DRIVE},file={},format=qcow2",
                img.display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 (Debian package qemu-system-x86)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut vm = Vm {
            child,
            stdin,
            stdout,
        };
        vm.until_prompt();
        vm
    }

    /// The monitor's output up to its next prompt, the prompt left out.
    fn until_prompt(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(PROMPT) {
            let n = self.stdout.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "QEMU exited; its monitor said: {}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
        out.truncate(out.len() - PROMPT.len());
        out
    }

    /// Send one monitor command and return what it printed once it completed
    /// (the monitor's echo of the line left out).
    pub fn command(&mut self, line: &str) -> String {
        assert!(!line.contains('\n'));
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let out = self.until_prompt();
        // The monitor echoes the line as it is typed, redrawing it with
        // terminal escapes, and ends the echo with "\r\n".
        let reply = match out.windows(2).position(|w| w == b"\r\n") {
            Some(at) => &out[at + 2..],
            None => &[][..],
        };
        String::from_utf8_lossy(reply).replace('\r', "")
    }

    /// A guest write of `len` bytes at `off` filled with a byte pattern.
    pub fn write(&mut self, pattern: u8, off: u64, len: u64) {
        self.io(&format!("write -P {pattern:#x} {off} {len}"));
    }

    /// A guest write of `len` bytes at `off` filled from a file (its first
    /// `len` bytes).
    pub fn write_from(&mut self, source: &Path, off: u64, len: u64) {
        self.io(&format!("write -s {} {off} {len}", source.display()));
    }

    /// One qemu-io command on the drive, which must report what it wrote.
    fn io(&mut self, cmd: &str) {
        let reply = self.command(&format!("qemu-io {DRIVE} \"{cmd}\""));
        assert!(reply.starts_with("wrote "), "qemu-io {cmd}: {reply}");
    }

    /// Take an internal snapshot of the disk and the VM state.
    pub fn savevm(&mut self, name: &str) {
        let reply = self.command(&format!("savevm {name}"));
        assert!(reply.trim().is_empty(), "savevm {name}: {reply}");
    }

    /// Delete an internal snapshot.
    pub fn delvm(&mut self, name: &str) {
        let reply = self.command(&format!("delvm {name}"));
        assert!(reply.trim().is_empty(), "delvm {name}: {reply}");
    }

    /// The tags of the snapshots QEMU sees, oldest first.
    pub fn snapshot_tags(&mut self) -> Vec<String> {
        let reply = self.command("info snapshots");
        // Rows after the header line: ID TAG VM-SIZE DATE ...
        reply
            .lines()
            .skip_while(|l| !l.starts_with("ID "))
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect()
    }

    /// Quit QEMU and wait until it has closed the image.
    pub fn quit(mut self) {
        writeln!(self.stdin, "quit").unwrap();
        self.stdin.flush().unwrap();
        let mut rest = Vec::new();
        self.stdout.read_to_end(&mut rest).unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // A test that failed with QEMU still running: end it.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
