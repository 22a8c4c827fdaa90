"""Added latency of `exec true` through the Python SDK over the TypeScript SDK, in one run.

One sandbox; batches of calls alternate between the Python SDK (through `msb api`) and the
TypeScript SDK (a bun child using src/sandbox.ts Sandbox.get on the same sandbox, timing inside
itself), so both see the same load. Prints medians and the ratio, and the SDK's lines of code.

    python3 bench/sdk-python-latency.py [batches] [per-batch]     (default 20 x 10; uses dist/msb)
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "sdk", "python"))
import msb  # noqa: E402

batches = int(sys.argv[1]) if len(sys.argv) > 1 else 20
per_batch = int(sys.argv[2]) if len(sys.argv) > 2 else 10
home = tempfile.mkdtemp(prefix="msb-bench-sdk-")
env = {"MSB_HOME": home, "MSB_BACKEND": "qemu"}
ts_script = """
import { Sandbox } from %s;
const sandbox = await Sandbox.get(process.argv[1]);
const times = [];
for (let i = 0; i < Number(process.argv[2]); i++) {
  const start = performance.now();
  await sandbox.exec("true");
  times.push(performance.now() - start);
}
sandbox.close();
console.log(JSON.stringify(times));
""" % json.dumps(os.path.join(ROOT, "src", "sandbox.ts"))


def lines_of_code(path):
    count = 0
    with open(path) as f:
        for line in f:
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                count += 1
    return count


with msb.Client(binary=os.path.join(ROOT, "dist", "msb"), env=env) as client:
    sandbox = client.create(name="bench", memory_mib=256)
    python_times, ts_times = [], []
    for _ in range(batches):
        for _ in range(per_batch):
            start = time.perf_counter()
            sandbox.exec(["true"])
            python_times.append((time.perf_counter() - start) * 1000)
        out = subprocess.run(
            [os.path.join(ROOT, "node_modules", ".bin", "bun"), "-e", ts_script, "bench", str(per_batch)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        ts_times.extend(json.loads(out.stdout.strip().splitlines()[-1]))
    sandbox.remove(force=True)

py, ts = statistics.median(python_times), statistics.median(ts_times)
print(f"exec true, {len(python_times)} calls each, alternating batches of {per_batch}")
print(f"  TypeScript SDK  median {ts:.2f} ms   p90 {statistics.quantiles(ts_times, n=10)[-1]:.2f} ms")
print(f"  Python SDK      median {py:.2f} ms   p90 {statistics.quantiles(python_times, n=10)[-1]:.2f} ms")
print(f"  added {py - ts:+.2f} ms, ratio {py / ts:.2f}")
print(f"Python SDK: {lines_of_code(os.path.join(ROOT, 'sdk', 'python', 'msb', '__init__.py'))} lines (without blank and # comment lines)")
subprocess.run(["rm", "-rf", home])
