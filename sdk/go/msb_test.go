// End-to-end tests of the Go SDK against the real runtime (dist/msb, qemu backend), in a
// temporary MSB_HOME. One sandbox is shared by the subtests to keep VM boots few.

package msb

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testHome is the temporary MSB_HOME every runtime of the tests uses.
var testHome string

func TestMain(m *testing.M) {
	code := func() int {
		if binary() == "" {
			// Every E2E test skips, saying why; an Example cannot skip, so it is left out.
			flag.Parse()
			if flag.Lookup("test.run").Value.String() == "" {
				flag.Set("test.run", "^Test")
			}
			fmt.Println("Example skipped: no msb binary ($MSB_BIN, else the checkout's dist/msb, does not exist); build it with bash scripts/setup.sh")
			return m.Run()
		}
		home, err := os.MkdirTemp("", "msb-go-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(home)
		testHome = home
		// In the environment (not only Options.Env) so the Example, written as user code, and
		// the TypeScript side of the benchmark use the same runtime, home and backend.
		os.Setenv("MSB_BIN", binary())
		os.Setenv("MSB_HOME", home)
		os.Setenv("MSB_BACKEND", "qemu")
		code := m.Run()
		// Whatever ran (the Example too), nothing of this home may outlive the tests.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(250 * time.Millisecond) {
			left := processesOfHome(home)
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "FAIL: processes left running with MSB_HOME=%s: %v\n", home, left)
				return 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// binary is MSB_BIN or the checkout's dist/msb, "" if neither exists.
func binary() string {
	if v := os.Getenv("MSB_BIN"); v != "" {
		if _, err := os.Stat(v); err == nil {
			return v
		}
		return ""
	}
	path, _ := filepath.Abs("../../dist/msb")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	return ""
}

func start(t testing.TB) *Client {
	t.Helper()
	bin := binary()
	if bin == "" {
		t.Skip("skipped: no msb binary ($MSB_BIN, else the checkout's dist/msb, does not exist); build it with bash scripts/setup.sh")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{Binary: bin})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return c
}

func within(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// processesOfHome lists live processes whose environment has our MSB_HOME.
func processesOfHome(home string) []string {
	var found []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		environ, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(append(append([]byte{0}, environ...), 0), []byte("\x00MSB_HOME="+home+"\x00")) {
			continue
		}
		stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		if i := bytes.LastIndex(stat, []byte(") ")); i >= 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		found = append(found, e.Name()+": "+strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))))
	}
	return found
}

func TestHandshake(t *testing.T) {
	c := start(t)
	if c.RuntimeVersion == "" {
		t.Errorf("the runtime reported no version")
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestErrorsWithoutVM(t *testing.T) {
	c := start(t)
	defer c.Close()

	_, err := c.Create(within(t, 60*time.Second), SandboxOptions{Image: "localhost:5999/nope:1", Pull: "never"})
	var e *Error
	if !errors.Is(err, ErrImageNotFound) || !errors.As(err, &e) || e.Code != "NOT_IN_STORE" {
		t.Errorf("missing image: want ErrImageNotFound with code NOT_IN_STORE, got %v", err)
	} else if !strings.Contains(e.Message, "localhost:5999/nope:1") {
		t.Errorf("missing image: the message should name the image: %q", e.Message)
	}

	_, err = c.Get(within(t, 30*time.Second), "no-such-sandbox")
	if !errors.Is(err, ErrSandboxNotFound) || !errors.Is(err, ErrNotFound) || errors.Is(err, ErrImageNotFound) {
		t.Errorf("missing sandbox: want ErrSandboxNotFound, got %v", err)
	} else if !strings.Contains(err.Error(), "no-such-sandbox") {
		t.Errorf("missing sandbox: the error should name it: %v", err)
	}

	_, err = c.Create(within(t, 30*time.Second), SandboxOptions{Extra: map[string]any{"bogus": true}})
	if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown option: want ErrInvalidOptions naming bogus, got %v", err)
	}
	_, err = c.Create(within(t, 30*time.Second), SandboxOptions{Network: "sideways"})
	if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "network") {
		t.Errorf("bad option value: want ErrInvalidOptions naming network, got %v", err)
	}
}

func TestBadBinary(t *testing.T) {
	_, err := Start(context.Background(), Options{Binary: "/no/such/msb"})
	if err == nil || !strings.Contains(err.Error(), "/no/such/msb") {
		t.Errorf("want an error naming the binary, got %v", err)
	}
	// A program that is not msb api dies at once: Start must say so, not hang.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = Start(ctx, Options{Binary: "/bin/false"})
	if !errors.Is(err, ErrRuntimeExited) {
		t.Errorf("want ErrRuntimeExited from a runtime that exits, got %v", err)
	}
}

// A runtime that dies while a process it started keeps its stdout and stderr open must still
// be reported as dead, with its exit status and last words, not waited on forever. (A stand-in
// runtime: the real one never leaves such a process; this is the SDK's edge.)
func TestRuntimeDiesLeavingPipeHolder(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-msb")
	script := "#!/bin/sh\nread hello\necho '{\"id\":1,\"result\":{\"protocol\":1,\"msb\":\"fake\"}}'\n" +
		"sleep 60 &\necho $! > " + filepath.Join(dir, "holder.pid") + "\necho 'fake runtime: giving up' >&2\nexit 3\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if pid, err := os.ReadFile(filepath.Join(dir, "holder.pid")); err == nil {
			var n int
			fmt.Sscanf(string(pid), "%d", &n)
			if n > 0 {
				syscall.Kill(n, syscall.SIGKILL)
			}
		}
	}()
	c, err := Start(within(t, 20*time.Second), Options{Binary: fake})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if c.RuntimeVersion != "fake" {
		t.Errorf("version %q", c.RuntimeVersion)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the runtime's death went unnoticed while another process held its pipes")
	}
	_, err = c.List(within(t, 10*time.Second))
	if !errors.Is(err, ErrRuntimeExited) || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "giving up") {
		t.Errorf("want ErrRuntimeExited with the exit status and stderr tail, got %v", err)
	}
	c.Close()
}

func TestSecrets(t *testing.T) {
	c := start(t)
	defer c.Close()
	value := fmt.Sprintf("go-%d-secret", time.Now().UnixNano())
	sb, err := c.Create(within(t, 180*time.Second), SandboxOptions{MemoryMiB: 256,
		Secrets: []Secret{{Name: "GO_KEY", Value: value, Allow: []string{"api.example.com"}}}})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	defer sb.Remove(context.Background(), true)
	r, err := sb.Exec(within(t, 60*time.Second), []string{"sh", "-c", `echo "$GO_KEY"; echo "$SSL_CERT_FILE"`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Stdout) != "$MSB_GO_KEY\n/etc/ssl/certs/ca-certificates.crt\n" || bytes.Contains(r.Stdout, []byte(value)) {
		t.Errorf("guest saw %q", r.Stdout)
	}
	_, err = c.Create(within(t, 60*time.Second), SandboxOptions{MemoryMiB: 256,
		Secrets: []Secret{{Name: "GO_KEY", Value: "bad\nvalue", Allow: []string{"api.example.com"}}}})
	if err == nil || !strings.Contains(err.Error(), "GO_KEY") || strings.Contains(err.Error(), "bad\nvalue") {
		t.Errorf("a bad value: got %v, want an error naming GO_KEY without the value", err)
	}
}

func TestSandbox(t *testing.T) {
	c := start(t)
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()
	sb, err := c.Create(within(t, 180*time.Second), SandboxOptions{Name: "go-sdk-test", MemoryMiB: 256})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	defer sb.Remove(context.Background(), true)

	t.Run("exec exit code and separate output", func(t *testing.T) {
		r, err := sb.Exec(within(t, 60*time.Second), []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.ExitCode != 3 || string(r.Stdout) != "out\n" || string(r.Stderr) != "err\n" || r.TimedOut {
			t.Errorf("got exit %d stdout %q stderr %q timedOut %v", r.ExitCode, r.Stdout, r.Stderr, r.TimedOut)
		}
	})

	t.Run("exec env cwd and stdin", func(t *testing.T) {
		input := bytes.Repeat([]byte("line of input\n"), 20000) // 280 KB: several windows
		r, err := sb.Exec(within(t, 60*time.Second), []string{"sh", "-c", "echo $GREETING; pwd; wc -c"},
			&ExecOptions{Env: map[string]string{"GREETING": "hello"}, Cwd: "/tmp", Stdin: input})
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("hello\n/tmp\n%d\n", len(input))
		if r.ExitCode != 0 || string(r.Stdout) != want {
			t.Errorf("got exit %d stdout %q stderr %q, want %q", r.ExitCode, r.Stdout, r.Stderr, want)
		}
	})

	t.Run("exec with input the command does not read", func(t *testing.T) {
		big := bytes.Repeat([]byte("x"), 3<<20)
		r, err := sb.Exec(within(t, 60*time.Second), []string{"true"}, &ExecOptions{Stdin: big})
		if err != nil || r.ExitCode != 0 {
			t.Errorf("true with unread input: %+v %v", r, err)
		}
		r, err = sb.Exec(within(t, 60*time.Second), []string{"head", "-c", "2"}, &ExecOptions{Stdin: big})
		if err != nil || r.ExitCode != 0 || string(r.Stdout) != "xx" {
			t.Errorf("head -c 2 with more input: %+v %v", r, err)
		}
	})

	t.Run("exec timeout", func(t *testing.T) {
		r, err := sb.Exec(within(t, 60*time.Second), []string{"sleep", "30"}, &ExecOptions{Timeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if !r.TimedOut || r.ExitCode != 137 || r.Signal != 9 {
			t.Errorf("want timedOut with exit 137 (signal 9), got %+v", r)
		}
	})

	t.Run("spawn streams output as it comes", func(t *testing.T) {
		p, err := sb.Spawn(within(t, 60*time.Second), []string{"sh", "-c", "echo one; sleep 2; echo two >&2; echo three"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewReader(p.Stdout)
		first, err := lines.ReadString('\n')
		if err != nil || first != "one\n" {
			t.Fatalf("first line: %q %v", first, err)
		}
		select {
		case <-p.done:
			t.Errorf("the first line arrived only after the command exited: not streamed")
		default:
		}
		second, err := lines.ReadString('\n')
		if err != nil || second != "three\n" {
			t.Errorf("second stdout line: %q %v", second, err)
		}
		if rest, err := lines.ReadString('\n'); rest != "" || err == nil {
			t.Errorf("after the exit stdout should end: %q %v", rest, err)
		}
		errLine, _ := bufio.NewReader(p.Stderr).ReadString('\n')
		if errLine != "two\n" {
			t.Errorf("stderr: %q", errLine)
		}
		status, err := p.Wait()
		if err != nil || status.ExitCode != 0 {
			t.Errorf("wait: %+v %v", status, err)
		}
	})

	t.Run("spawn with interactive stdin and signal", func(t *testing.T) {
		p, err := sb.Spawn(within(t, 60*time.Second), []string{"cat"}, &ExecOptions{OpenStdin: true})
		if err != nil {
			t.Fatal(err)
		}
		out := bufio.NewReader(p.Stdout)
		for _, word := range []string{"ping\n", "pong\n"} {
			if err := p.Write([]byte(word)); err != nil {
				t.Fatal(err)
			}
			got, err := out.ReadString('\n')
			if got != word || err != nil {
				t.Fatalf("echo of %q: %q %v", word, got, err)
			}
		}
		if err := p.CloseStdin(); err != nil {
			t.Fatal(err)
		}
		if status, err := p.Wait(); err != nil || status.ExitCode != 0 {
			t.Errorf("cat after end of input: %+v %v", status, err)
		}

		p, err = sb.Spawn(within(t, 60*time.Second), []string{"sleep", "30"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Signal(15); err != nil {
			t.Fatal(err)
		}
		if status, err := p.Wait(); err != nil || status.Signal != 15 || status.ExitCode != 143 {
			t.Errorf("after SIGTERM: %+v %v", status, err)
		}
	})

	t.Run("cancelled exec returns ctx error and kills the command", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		began := time.Now()
		_, err := sb.Exec(ctx, []string{"sh", "-c", "echo started > /tmp/cancel-marker; exec sleep 29"}, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("want context.DeadlineExceeded, got %v", err)
		}
		if waited := time.Since(began); waited > 10*time.Second {
			t.Errorf("Exec returned %v after the deadline", waited)
		}
		// The command got signal 9: no `sleep 29` left in the guest.
		deadline := time.Now().Add(20 * time.Second)
		for {
			r, err := sb.Exec(within(t, 30*time.Second), []string{"sh", "-c", "ps -o args | grep '^sleep 29' || true"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(bytes.TrimSpace(r.Stdout)) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the cancelled command still runs: %q", r.Stdout)
			}
			time.Sleep(300 * time.Millisecond)
		}
	})

	t.Run("files", func(t *testing.T) {
		ctx := within(t, 60*time.Second)
		data := make([]byte, 300000)
		for i := range data {
			data[i] = byte(i * 7)
		}
		if err := sb.Mkdir(ctx, "/tmp/go/a/b", true); err != nil {
			t.Fatal(err)
		}
		if err := sb.WriteFile(ctx, "/tmp/go/a/b/blob", data, 0o640); err != nil {
			t.Fatal(err)
		}
		got, err := sb.ReadFile(ctx, "/tmp/go/a/b/blob")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip: %d bytes back, equal=%v, %v", len(got), bytes.Equal(got, data), err)
		}
		st, err := sb.Stat(ctx, "/tmp/go/a/b/blob")
		if err != nil || st.Type != "file" || st.Size != int64(len(data)) || st.Mode != 0o640 {
			t.Errorf("stat: %+v %v", st, err)
		}
		if err := sb.Chmod(ctx, "/tmp/go/a/b/blob", 0o600); err != nil {
			t.Fatal(err)
		}
		if err := sb.Rename(ctx, "/tmp/go/a/b/blob", "/tmp/go/a/blob2"); err != nil {
			t.Fatal(err)
		}
		entries, err := sb.ListDir(ctx, "/tmp/go/a")
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]DirEntry{}
		for _, e := range entries {
			names[e.Name] = e
		}
		if names["b"].Type != "directory" || names["blob2"].Mode != 0o600 || len(names) != 2 {
			t.Errorf("list: %+v", entries)
		}
		empty, err := sb.ReadFile(ctx, "/dev/null")
		if err != nil || empty == nil || len(empty) != 0 {
			t.Errorf("empty file: %v %v", empty, err)
		}
		if err := sb.RemovePath(ctx, "/tmp/go", true); err != nil {
			t.Fatal(err)
		}
		if ok, err := sb.Exists(ctx, "/tmp/go"); ok || err != nil {
			t.Errorf("exists after remove: %v %v", ok, err)
		}
		_, err = sb.ReadFile(ctx, "/tmp/go/a/blob2")
		if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrSandboxNotFound) {
			t.Errorf("missing file: want ErrNotFound (not ErrSandboxNotFound), got %v", err)
		}
	})

	t.Run("concurrent execs and large output", func(t *testing.T) {
		var want strings.Builder
		for i := 1; i <= 200000; i++ {
			fmt.Fprintf(&want, "%d\n", i)
		}
		type outcome struct {
			i   int
			out string
			err error
		}
		results := make(chan outcome, 9)
		for i := 0; i < 8; i++ {
			go func(i int) {
				r, err := sb.Exec(within(t, 60*time.Second), []string{"sh", "-c", fmt.Sprintf("echo %d", i)}, nil)
				if err != nil {
					results <- outcome{i, "", err}
					return
				}
				results <- outcome{i, string(r.Stdout), nil}
			}(i)
		}
		go func() {
			r, err := sb.Exec(within(t, 60*time.Second), []string{"seq", "1", "200000"}, nil)
			if err != nil {
				results <- outcome{-1, "", err}
				return
			}
			results <- outcome{-1, string(r.Stdout), nil}
		}()
		for n := 0; n < 9; n++ {
			o := <-results
			switch {
			case o.err != nil:
				t.Errorf("exec %d: %v", o.i, o.err)
			case o.i == -1 && o.out != want.String():
				t.Errorf("seq output: %d bytes, want %d", len(o.out), want.Len())
			case o.i >= 0 && o.out != fmt.Sprintf("%d\n", o.i):
				t.Errorf("exec %d got %q: replies crossed", o.i, o.out)
			}
		}
	})

	t.Run("already exists and protocol errors", func(t *testing.T) {
		_, err := c.Create(within(t, 60*time.Second), SandboxOptions{Name: sb.Name, MemoryMiB: 256})
		if !errors.Is(err, ErrAlreadyExists) || !strings.Contains(err.Error(), sb.Name) {
			t.Errorf("create with a taken name: want ErrAlreadyExists naming it, got %v", err)
		}
		err = c.call(within(t, 30*time.Second), "no_such_method", map[string]any{}, nil, nil)
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("unknown method: want ErrProtocol, got %v", err)
		}
	})

	t.Run("get and list", func(t *testing.T) {
		other, err := c.Get(within(t, 30*time.Second), sb.Name)
		if err != nil || other.Name != sb.Name {
			t.Fatalf("get: %v %v", other, err)
		}
		list, err := c.List(within(t, 30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, info := range list {
			if info.Name == sb.Name {
				found = info.Status == "running" && info.CreatedAt != ""
			}
		}
		if !found {
			t.Errorf("list does not show %s running: %+v", sb.Name, list)
		}
	})

	t.Run("runtime killed: calls fail, never hang", func(t *testing.T) {
		c2 := start(t)
		other, err := c2.Get(within(t, 30*time.Second), sb.Name)
		if err != nil {
			t.Fatal(err)
		}
		p, err := other.Spawn(within(t, 30*time.Second), []string{"sleep", "28"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(c2.Pid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waited := make(chan error, 1)
		go func() { _, err := p.Wait(); waited <- err }()
		select {
		case err := <-waited:
			if !errors.Is(err, ErrRuntimeExited) || !strings.Contains(err.Error(), "killed") {
				t.Errorf("Wait after the runtime died: want ErrRuntimeExited saying it was killed, got %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Wait hung after the runtime was killed")
		}
		if _, err := other.Exec(within(t, 15*time.Second), []string{"true"}, nil); !errors.Is(err, ErrRuntimeExited) {
			t.Errorf("a call after the runtime died: want ErrRuntimeExited, got %v", err)
		}
		if _, err := p.Stdout.Read(make([]byte, 1)); !errors.Is(err, ErrRuntimeExited) {
			t.Errorf("reading output after the runtime died: want ErrRuntimeExited, got %v", err)
		}
		c2.Close()
		// The first runtime is unaffected.
		if r, err := sb.Exec(within(t, 30*time.Second), []string{"true"}, nil); err != nil || r.ExitCode != 0 {
			t.Errorf("the other client after one runtime died: %+v %v", r, err)
		}
	})

	t.Run("stop and remove", func(t *testing.T) {
		if err := sb.Stop(within(t, 60*time.Second)); err != nil {
			t.Fatal(err)
		}
		_, err := sb.Exec(within(t, 30*time.Second), []string{"true"}, nil)
		if !errors.Is(err, ErrNotRunning) {
			t.Errorf("exec in a stopped sandbox: want ErrNotRunning, got %v", err)
		}
		if err := sb.Remove(within(t, 30*time.Second), false); err != nil {
			t.Fatal(err)
		}
		list, err := c.List(within(t, 30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for _, info := range list {
			if info.Name == sb.Name {
				t.Errorf("removed sandbox still listed: %+v", info)
			}
		}
		if _, err := c.Get(within(t, 30*time.Second), sb.Name); !errors.Is(err, ErrSandboxNotFound) {
			t.Errorf("get after remove: want ErrSandboxNotFound, got %v", err)
		}
	})

	closed = true
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		left := processesOfHome(testHome)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left running with MSB_HOME=%s: %v", testHome, left)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
