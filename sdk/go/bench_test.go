// The cost of a trivial command through this SDK (Go -> msb api -> sandbox) next to the
// TypeScript SDK talking to the same sandbox directly, in the same run:
//
//	go test -run '^$' -bench ExecTrue -benchtime 300x
//
// Batches of `exec true` alternate between the two SDKs (a Bun process runs the TypeScript side
// on request), so load on the machine hits both alike; each reports the median batch's ns/exec
// and their ratio.

package msb

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// batch is how many execs one timed batch runs.
const batch = 10

// tsExecBatches answers each line "n" on stdin with the ns per exec of n `exec true`.
const tsExecBatches = `
import { Sandbox } from %q;
const sandbox = await Sandbox.get(%q);
for (let i = 0; i < 5; i++) await sandbox.exec("true");
console.log("{}");
for await (const line of console) {
  const n = Number(line);
  if (!n) break;
  const start = Bun.nanoseconds();
  for (let i = 0; i < n; i++) {
    const r = await sandbox.exec("true");
    if (r.exitCode !== 0) throw new Error("true exited " + r.exitCode);
  }
  console.log(JSON.stringify({ nsPerExec: (Bun.nanoseconds() - start) / n }));
}
sandbox.close();
`

func median(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

func BenchmarkExecTrue(b *testing.B) {
	c := start(b)
	defer c.Close()
	ctx := context.Background()
	sb, err := c.Create(ctx, SandboxOptions{Name: "go-sdk-bench", MemoryMiB: 256})
	if err != nil {
		b.Fatal(err)
	}
	defer sb.Remove(ctx, true)
	repo, _ := filepath.Abs("../..")
	bun := filepath.Join(repo, "node_modules/.bin/bun")
	if _, err := os.Stat(bun); err != nil {
		b.Skip("skipped: no node_modules/.bin/bun in the checkout for the TypeScript side")
	}
	ts := exec.Command(bun, "-e", fmt.Sprintf(tsExecBatches, filepath.Join(repo, "src/sandbox.ts"), sb.Name))
	ts.Dir = repo
	ts.Stderr = os.Stderr
	tsIn, _ := ts.StdinPipe()
	tsOut, _ := ts.StdoutPipe()
	if err := ts.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { tsIn.Close(); ts.Wait() }()
	lines := bufio.NewScanner(tsOut)
	if !lines.Scan() { // the TypeScript side is connected and warm
		b.Fatal("the bun script ended before it was ready")
	}
	tsBatch := func(n int) float64 {
		fmt.Fprintf(tsIn, "%d\n", n)
		var res struct{ NsPerExec float64 }
		if !lines.Scan() || json.Unmarshal(lines.Bytes(), &res) != nil || res.NsPerExec <= 0 {
			b.Fatalf("bun printed %q", lines.Text())
		}
		return res.NsPerExec
	}
	goBatch := func(n int, run func() error) float64 {
		began := time.Now()
		for i := 0; i < n; i++ {
			if err := run(); err != nil {
				b.Fatal(err)
			}
		}
		return float64(time.Since(began).Nanoseconds()) / float64(n)
	}
	sdkExec := func() error {
		r, err := sb.Exec(ctx, []string{"true"}, nil)
		if err == nil && r.ExitCode != 0 {
			err = fmt.Errorf("true exited %d", r.ExitCode)
		}
		return err
	}
	// The API's one-shot exec method (no events, not cancellable): Exec without spawn's events.
	methodExec := func() error {
		var r struct{ ExitCode int }
		err := c.call(ctx, "exec", map[string]any{"name": sb.Name, "argv": []string{"true"}}, &r, nil)
		if err == nil && r.ExitCode != 0 {
			err = fmt.Errorf("true exited %d", r.ExitCode)
		}
		return err
	}
	// A request the runtime answers from memory (the sandbox it holds): the hop alone.
	hop := func() error {
		_, err := c.Get(ctx, sb.Name)
		return err
	}
	goBatch(5, sdkExec) // warm up

	b.Run("paired", func(b *testing.B) {
		var goSDK, goMethod, tsSDK, hops []float64
		for done := 0; done < b.N; done += batch {
			goSDK = append(goSDK, goBatch(batch, sdkExec))
			tsSDK = append(tsSDK, tsBatch(batch))
			goMethod = append(goMethod, goBatch(batch, methodExec))
			hops = append(hops, goBatch(batch, hop))
		}
		b.ReportMetric(median(hops), "api-roundtrip-ns")
		g, m, t := median(goSDK), median(goMethod), median(tsSDK)
		b.ReportMetric(g, "go-sdk-ns/exec")
		b.ReportMetric(m, "go-exec-method-ns/exec")
		b.ReportMetric(t, "ts-sdk-ns/exec")
		b.ReportMetric(g/t, "go/ts")
	})
}
