// Measures what the Rust SDK adds to `exec true` over the TypeScript SDK, in the same run on the
// same sandbox. Calls alternate one by one (a Rust call, then a TypeScript call in a Bun child
// using src/sandbox.ts `Sandbox.get`, driven over a pipe), so both see the same machine load; the
// figures are medians and quantiles of each side and the median of the paired differences.
//
//   MSB_BIN=/work/main/dist/msb MSB_BACKEND=qemu cargo run --release --example exec_latency [pairs]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use msb::{Client, ClientOptions, ExecOptions, SandboxOptions};

/// The `q` quantile (0..=1) by nearest rank.
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Answers each input line with the milliseconds one `exec true` took.
const TS_SCRIPT: &str = r#"
import { Sandbox } from "./src/sandbox.ts";
const sandbox = await Sandbox.get(process.env.BENCH_SANDBOX!);
const lines = console[Symbol.asyncIterator]();
for await (const _ of lines) {
  const start = performance.now();
  const result = await sandbox.exec("true");
  if (result.exitCode !== 0) throw new Error(`exit ${result.exitCode}`);
  console.log(performance.now() - start);
}
sandbox.close();
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pairs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(150);
    let repo = std::env::var_os("MSB_REPO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let temp_home = std::env::temp_dir().join(format!("msb-rust-bench-{}", std::process::id()));
    let home = std::env::var("MSB_HOME").unwrap_or_else(|_| temp_home.display().to_string());
    let client = Client::start(ClientOptions { binary: None, env: vec![("MSB_HOME".into(), home.clone())] })?;
    let sandbox = client.create(&SandboxOptions { name: Some(format!("bench-{}", std::process::id())), memory_mib: Some(256), ..Default::default() })?;
    // Both sides reach the sandbox the same way: `Sandbox.get` from a process that did not create
    // it (the Rust side through a second `msb api`, which does exactly that).
    let other = Client::start(ClientOptions { binary: None, env: vec![("MSB_HOME".into(), home.clone())] })?;
    let rust_side = other.get(sandbox.name())?;

    let mut bun = Command::new(repo.join("node_modules/.bin/bun"))
        .args(["-e", TS_SCRIPT])
        .current_dir(&repo)
        .env("MSB_HOME", &home)
        .env("BENCH_SANDBOX", sandbox.name())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to_bun = bun.stdin.take().ok_or("bun stdin")?;
    let mut from_bun = BufReader::new(bun.stdout.take().ok_or("bun stdout")?).lines();
    let mut ts_call = move || -> Result<f64, Box<dyn std::error::Error>> {
        writeln!(to_bun, "go")?;
        to_bun.flush()?;
        Ok(from_bun.next().ok_or("bun exited")??.trim().parse::<f64>()?)
    };
    let options = ExecOptions::default();
    let rust_call = || -> Result<f64, Box<dyn std::error::Error>> {
        let start = Instant::now();
        let result = rust_side.exec(&["true"], &options)?;
        assert!(result.success());
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    };

    for _ in 0..10 {
        rust_call()?;
        ts_call()?;
    }
    let (mut rust, mut ts, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        // Alternate which goes first, so neither always follows the other's wake-ups.
        let (r, t) = if i % 2 == 0 {
            let r = rust_call()?;
            (r, ts_call()?)
        } else {
            let t = ts_call()?;
            (rust_call()?, t)
        };
        rust.push(r);
        ts.push(t);
        diff.push(r - t);
    }
    drop(ts_call);
    bun.wait()?;

    let row = |label: &str, q: f64| {
        let (r, t) = (quantile(&rust, q), quantile(&ts, q));
        println!("  {label:<16} TS {t:6.2} ms   Rust {r:6.2} ms   added {:+6.2} ms   ratio {:.2}", r - t, r / t);
    };
    println!("exec true on one qemu sandbox, {pairs} alternating pairs (TypeScript SDK in-process in Bun; Rust SDK via msb api):");
    row("minimum", 0.0);
    row("10th percentile", 0.1);
    row("median", 0.5);
    row("90th percentile", 0.9);
    println!("  median of paired differences (Rust - TS): {:+.2} ms", quantile(&diff, 0.5));

    other.close();
    sandbox.remove(true)?;
    client.close();
    if std::env::var("MSB_HOME").is_err() {
        let _ = std::fs::remove_dir_all(&temp_home);
    }
    Ok(())
}
