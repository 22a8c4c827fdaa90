// The cost of a trivial command through this SDK (Go -> msb api -> sandbox) next to the
// TypeScript SDK talking to the same sandbox directly, in the same run:
//
//	go test -run '^$' -bench ExecTrue -benchtime 200x
//
// Both report ns/exec; the difference is what the extra process hop and JSON lines add.

package msb

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

const tsExecLoop = `
import { Sandbox } from %q;
const sandbox = await Sandbox.get(%q);
const n = %d;
for (let i = 0; i < 5; i++) await sandbox.exec("true");
const start = Bun.nanoseconds();
for (let i = 0; i < n; i++) {
  const r = await sandbox.exec("true");
  if (r.exitCode !== 0) throw new Error("true exited " + r.exitCode);
}
console.log(JSON.stringify({ nsPerExec: (Bun.nanoseconds() - start) / n }));
sandbox.close();
`

func BenchmarkExecTrue(b *testing.B) {
	c := start(b)
	defer c.Close()
	ctx := context.Background()
	sb, err := c.Create(ctx, SandboxOptions{Name: "go-sdk-bench", MemoryMiB: 256})
	if err != nil {
		b.Fatal(err)
	}
	defer sb.Remove(ctx, true)
	for i := 0; i < 5; i++ { // warm up the agent connection and page cache
		if _, err := sb.Exec(ctx, []string{"true"}, nil); err != nil {
			b.Fatal(err)
		}
	}

	b.Run("go-sdk", func(b *testing.B) {
		b.ResetTimer()
		began := time.Now()
		for i := 0; i < b.N; i++ {
			r, err := sb.Exec(ctx, []string{"true"}, nil)
			if err != nil || r.ExitCode != 0 {
				b.Fatalf("exec true: %+v %v", r, err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(time.Since(began).Nanoseconds())/float64(b.N), "ns/exec")
	})

	// The API's one-shot exec method (no events, not cancellable): what Exec would cost without
	// spawn's events.
	b.Run("go-exec-method", func(b *testing.B) {
		b.ResetTimer()
		began := time.Now()
		for i := 0; i < b.N; i++ {
			var r struct{ ExitCode int }
			if err := c.call(ctx, "exec", map[string]any{"name": sb.Name, "argv": []string{"true"}}, &r, nil); err != nil || r.ExitCode != 0 {
				b.Fatalf("exec true: %+v %v", r, err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(time.Since(began).Nanoseconds())/float64(b.N), "ns/exec")
	})

	b.Run("ts-sdk", func(b *testing.B) {
		repo, _ := filepath.Abs("../..")
		bun := filepath.Join(repo, "node_modules/.bin/bun")
		if _, err := os.Stat(bun); err != nil {
			b.Skip("skipped: no node_modules/.bin/bun in the checkout for the TypeScript side")
		}
		script := fmt.Sprintf(tsExecLoop, filepath.Join(repo, "src/sandbox.ts"), sb.Name, b.N)
		b.StopTimer() // bun's start-up is not part of an exec; the script times its loop
		cmd := exec.Command(bun, "-e", script)
		cmd.Dir = repo
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("bun: %v", err)
		}
		var res struct{ NsPerExec float64 }
		if err := json.Unmarshal(out, &res); err != nil || res.NsPerExec <= 0 {
			b.Fatalf("bun printed %q: %v", out, err)
		}
		b.ReportMetric(res.NsPerExec, "ns/exec")
	})
}
