// The README's example: create a sandbox, run commands (collected and streamed), move a file in
// and out. Run it with `MSB_BIN=/path/to/msb cargo run --example quickstart` (or msb on PATH).

use std::io::{BufRead, BufReader};

use msb::{Client, ClientOptions, Error, ExecOptions, SandboxOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Starts `msb api`; sandboxes it creates stop when `client` is dropped.
    let client = Client::start(ClientOptions::default())?;
    let sandbox = client.create(&SandboxOptions { memory_mib: Some(256), ..Default::default() })?;

    // Collected: exit code, stdout and stderr apart.
    let result = sandbox.exec(&["sh", "-c", "echo hello from $(uname -s); echo oops >&2; exit 3"], &ExecOptions::default())?;
    println!("exit {} stdout {:?} stderr {:?}", result.exit_code, result.stdout_text(), result.stderr_text());

    // Streamed: read lines as the command prints them.
    let process = sandbox.spawn(&["sh", "-c", "for i in 1 2 3; do echo step $i; sleep 0.2; done"], &ExecOptions::default())?;
    for line in BufReader::new(process.stdout()).lines() {
        println!("streamed: {}", line?);
    }
    println!("streamed command exited {}", process.wait()?.exit_code);

    // Input and files.
    let upper = sandbox.exec(&["tr", "a-z", "A-Z"], &ExecOptions { stdin: Some(b"shout\n".to_vec()), ..Default::default() })?;
    print!("tr: {}", upper.stdout_text());
    sandbox.write_file("/tmp/note.txt", "written from Rust\n")?;
    print!("file: {}", String::from_utf8_lossy(&sandbox.read_file("/tmp/note.txt")?));

    // Errors are typed.
    match client.get("no-such-sandbox") {
        Err(Error::SandboxNotFound { message }) => println!("as expected: {message}"),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
