// Measures what the Rust SDK adds to `exec true` over the TypeScript SDK, in the same run on the
// same sandbox: Rust batch, TypeScript batch (a Bun child using src/sandbox.ts `Sandbox.get`),
// Rust batch again (so drift on a busy machine shows). Prints medians and the ratio.
//
//   MSB_BIN=/work/main/dist/msb MSB_BACKEND=qemu cargo run --release --example exec_latency [N per batch] [rounds]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use msb::{Client, ClientOptions, ExecOptions, SandboxOptions};

/// The `q` quantile (0..=1) by nearest rank.
fn quantile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let mid = samples.len() / 2;
    if samples.len().is_multiple_of(2) {
        (samples[mid - 1] + samples[mid]) / 2.0
    } else {
        samples[mid]
    }
}

fn rust_batch(sandbox: &msb::Sandbox, n: usize) -> Vec<f64> {
    let options = ExecOptions::default();
    for _ in 0..5 {
        sandbox.exec(&["true"], &options).expect("warm-up exec");
    }
    (0..n)
        .map(|_| {
            let start = Instant::now();
            let result = sandbox.exec(&["true"], &options).expect("exec true");
            assert!(result.success());
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

const TS_SCRIPT: &str = r#"
import { Sandbox } from "./src/sandbox.ts";
const [name, n] = [process.env.BENCH_SANDBOX!, Number(process.env.BENCH_N)];
const sandbox = await Sandbox.get(name);
for (let i = 0; i < 5; i++) await sandbox.exec("true");
const samples: number[] = [];
for (let i = 0; i < n; i++) {
  const start = performance.now();
  const result = await sandbox.exec("true");
  if (result.exitCode !== 0) throw new Error(`exit ${result.exitCode}`);
  samples.push(performance.now() - start);
}
sandbox.close();
console.log(JSON.stringify(samples));
"#;

fn ts_batch(repo: &PathBuf, home: &str, name: &str, n: usize) -> Vec<f64> {
    let out = Command::new(repo.join("node_modules/.bin/bun"))
        .args(["-e", TS_SCRIPT])
        .current_dir(repo)
        .env("MSB_HOME", home)
        .env("BENCH_SANDBOX", name)
        .env("BENCH_N", n.to_string())
        .output()
        .expect("run bun");
    assert!(out.status.success(), "bun failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = msb::json::parse(text.trim().as_bytes()).expect("bun prints a JSON array");
    parsed.as_array().expect("an array").iter().map(|v| v.as_f64().expect("a number")).collect()
}

fn main() -> Result<(), msb::Error> {
    // Short batches, alternated: on a loaded machine the load drifts between batches.
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let rounds: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let repo = std::env::var_os("MSB_REPO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let temp_home = std::env::temp_dir().join(format!("msb-rust-bench-{}", std::process::id()));
    let home = std::env::var("MSB_HOME").unwrap_or_else(|_| temp_home.display().to_string());
    let client = Client::start(ClientOptions { binary: None, env: vec![("MSB_HOME".into(), home.clone())] })?;
    let sandbox = client.create(&SandboxOptions { name: Some(format!("bench-{}", std::process::id())), memory_mib: Some(256), ..Default::default() })?;

    // Both sides reach the sandbox the same way: `Sandbox.get` from a process that did not
    // create it (the Rust side through a second `msb api`, which does exactly that).
    let other = Client::start(ClientOptions { binary: None, env: vec![("MSB_HOME".into(), home.clone())] })?;
    let got = other.get(sandbox.name())?;
    let (mut rust, mut ts) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut r = rust_batch(&got, n);
        let mut t = ts_batch(&repo, &home, sandbox.name(), n);
        println!("round {round}: median Rust {:.2} ms, TypeScript {:.2} ms", median(&mut r), median(&mut t));
        rust.extend(r);
        ts.extend(t);
    }
    let (rust_med, ts_med) = (median(&mut rust), median(&mut ts));
    println!("exec true, median of {} Rust SDK / {} TypeScript SDK calls on one qemu sandbox:", rust.len(), ts.len());
    println!("  TypeScript SDK (in-process, bun from source): {ts_med:.2} ms");
    println!("  Rust SDK (via msb api, dist/msb):              {rust_med:.2} ms");
    println!("  added: {:+.2} ms, ratio Rust/TS: {:.2}", rust_med - ts_med, rust_med / ts_med);
    // The low quantiles are what the code costs; the medians include the machine's load.
    let (rust_p10, ts_p10) = (quantile(&mut rust, 0.1), quantile(&mut ts, 0.1));
    let (rust_min, ts_min) = (quantile(&mut rust, 0.0), quantile(&mut ts, 0.0));
    println!("  10th percentile: TS {ts_p10:.2} ms, Rust {rust_p10:.2} ms, added {:+.2} ms, ratio {:.2}", rust_p10 - ts_p10, rust_p10 / ts_p10);
    println!("  minimum:         TS {ts_min:.2} ms, Rust {rust_min:.2} ms, added {:+.2} ms, ratio {:.2}", rust_min - ts_min, rust_min / ts_min);
    other.close();

    sandbox.remove(true)?;
    client.close();
    if std::env::var("MSB_HOME").is_err() {
        let _ = std::fs::remove_dir_all(&temp_home);
    }
    Ok(())
}
