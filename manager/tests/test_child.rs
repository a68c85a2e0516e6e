//! One test of this binary run again as a child process (crash, lock and disk-full tests),
//! and the lines it reports: what it prints after `@@` on its stdout.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// A running child: the process, and its `@@` lines as they come.
pub(crate) struct TestChild {
    pub(crate) child: Child,
    pub(crate) lines: mpsc::Receiver<String>,
}

/// Runs the ignored test `test` of this binary in a child process with `env`, its stdin as
/// `stdin`. Its stderr is forwarded to this test's: piped, not inherited, so a child whose
/// file size limit is low can still report a panic when the log is a large file.
pub(crate) fn spawn(test: &str, env: &[(&str, &OsStr)], stdin: Stdio) -> TestChild {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().copied())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[child] {line}");
        }
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(at) = line.find("@@")
                && tx.send(line[at + 2..].to_owned()).is_err()
            {
                break;
            }
        }
    });
    TestChild { child, lines }
}
