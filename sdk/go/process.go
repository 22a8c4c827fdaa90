// Commands in a sandbox: Exec runs one to completion and collects its output; Spawn streams it.
// Both use the API's spawn method, so a cancelled context can kill the command (signal 9).

package msb

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"sync"
	"time"
)

// writeChunk bounds one write request (the runtime takes lines up to 64 MiB).
const writeChunk = 1 << 20

// ExecOptions adjust one command; nil means the defaults.
type ExecOptions struct {
	// Env is added to the sandbox's environment.
	Env map[string]string
	// Cwd is the working directory (default: the sandbox's workdir).
	Cwd string
	// User runs the command as a user from the image, UID or UID:GID.
	User string
	// Timeout kills the command's process group after this long; the result says TimedOut.
	Timeout time.Duration
	// Stdin is the command's input (Exec); without it the command reads /dev/null. For Spawn,
	// a non-nil Stdin is written first and stdin stays open for Write until CloseStdin.
	Stdin []byte
	// OpenStdin (Spawn) keeps stdin open for Write/CloseStdin even without initial Stdin.
	OpenStdin bool
}

// ExitStatus is how a command ended.
type ExitStatus struct {
	// ExitCode as a shell reports it: the exit code, or 128 + the signal number.
	ExitCode int
	// Signal that killed the command, 0 if it exited.
	Signal int
	// TimedOut: the command was killed because ExecOptions.Timeout passed.
	TimedOut bool
}

// ExecResult is a finished command with its output.
type ExecResult struct {
	ExitCode int
	Signal   int
	TimedOut bool
	Stdout   []byte
	Stderr   []byte
}

// Process is a command started with Spawn.
type Process struct {
	// Stdout and Stderr deliver the command's output as it comes; they end (io.EOF) when it
	// exits. Output is buffered in this process until read, so read both (or neither needs
	// to be read: Wait does not depend on them).
	Stdout io.Reader
	Stderr io.Reader

	c      *Client
	id     int64
	stdout *stream
	stderr *stream
	done   chan struct{}
	once   sync.Once
	status ExitStatus
	err    error
	ctxErr error
	mu     sync.Mutex
}

// Exec runs argv in the sandbox and returns when it exits, with its whole output. A non-zero
// exit is not an error: look at ExitCode. If ctx is cancelled first, Exec sends the command
// signal 9 (SIGKILL, its process only; the guest agent then ends it) and returns ctx.Err()
// without waiting for it.
func (s *Sandbox) Exec(ctx context.Context, argv []string, opts *ExecOptions) (*ExecResult, error) {
	p, err := s.Spawn(ctx, argv, opts)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err() // Spawn's watcher sends the kill
	}
	status, err := p.Wait()
	if err != nil {
		return nil, err
	}
	return &ExecResult{
		ExitCode: status.ExitCode,
		Signal:   status.Signal,
		TimedOut: status.TimedOut,
		Stdout:   p.stdout.all(),
		Stderr:   p.stderr.all(),
	}, nil
}

// Spawn starts argv in the sandbox and returns at once. Cancelling ctx before the command exits
// sends it signal 9 and makes Wait return ctx.Err().
func (s *Sandbox) Spawn(ctx context.Context, argv []string, opts *ExecOptions) (*Process, error) {
	if opts == nil {
		opts = &ExecOptions{}
	}
	p := &Process{c: s.c, stdout: newStream(), stderr: newStream(), done: make(chan struct{})}
	p.Stdout, p.Stderr = p.stdout, p.stderr
	params := map[string]any{"name": s.Name, "argv": argv}
	if len(opts.Env) > 0 {
		params["env"] = opts.Env
	}
	if opts.Cwd != "" {
		params["cwd"] = opts.Cwd
	}
	if opts.User != "" {
		params["user"] = opts.User
	}
	if opts.Timeout > 0 {
		ms := opts.Timeout.Milliseconds()
		if ms < 1 {
			ms = 1
		}
		params["timeoutMs"] = ms
	}
	keepOpen := opts.Stdin != nil || opts.OpenStdin
	if keepOpen {
		params["stdin"] = true
	}
	var out struct {
		Process int64 `json:"process"`
	}
	onResult := func(result json.RawMessage) {
		if json.Unmarshal(result, &out) == nil {
			p.id = out.Process
			s.c.register(out.Process, p)
			if ctx.Err() != nil {
				p.kill() // the caller gave up before the command started: stop it
			}
		}
	}
	if err := s.c.call(ctx, "spawn", params, nil, onResult); err != nil {
		return nil, err
	}
	if ctx.Done() != nil {
		go func() {
			select {
			case <-ctx.Done():
				p.mu.Lock()
				p.ctxErr = ctx.Err()
				p.mu.Unlock()
				p.kill()
			case <-p.done:
			}
		}()
	}
	if opts.Stdin != nil {
		err := p.Write(opts.Stdin)
		if err == nil && !opts.OpenStdin {
			err = p.CloseStdin()
		}
		if err != nil {
			select {
			case <-p.done:
				// It exited without reading all its input (like `true`): not a failure of
				// the spawn; Wait tells how it ended.
			default:
				p.kill()
				return nil, err
			}
		}
	}
	return p, nil
}

// kill sends signal 9 without waiting for a context (the caller's one may be over).
func (p *Process) kill() {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.c.call(ctx, "signal", map[string]any{"process": p.id, "signal": 9}, nil, nil)
	}()
}

// Write sends input to the command (spawned with Stdin or OpenStdin); it returns once the guest
// has taken it.
func (p *Process) Write(data []byte) error {
	for len(data) > 0 {
		n := len(data)
		if n > writeChunk {
			n = writeChunk
		}
		if err := p.call("write", map[string]any{"process": p.id, "data": data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// CloseStdin ends the command's input.
func (p *Process) CloseStdin() error {
	return p.call("end", map[string]any{"process": p.id})
}

// Signal sends a signal (e.g. 15 for SIGTERM) to the command.
func (p *Process) Signal(sig int) error {
	return p.call("signal", map[string]any{"process": p.id, "signal": sig})
}

// call is a request about this process, abandoned if the process ends meanwhile.
func (p *Process) call(method string, params map[string]any) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := p.c.call(ctx, method, params, nil, nil)
	if err == context.Canceled {
		if _, werr := p.Wait(); werr != nil {
			return werr
		}
		return &Error{Code: "not_found", Message: "the process has exited", Method: method}
	}
	return err
}

// Wait blocks until the command exits. The error is ctx.Err() if Spawn's context ended it, the
// runtime's error if the sandbox went away, or ErrRuntimeExited.
func (p *Process) Wait() (ExitStatus, error) {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctxErr != nil {
		return p.status, p.ctxErr
	}
	return p.status, p.err
}

// event handles one event for this process (on the client's reader goroutine).
func (p *Process) event(msg *message) {
	switch msg.Event {
	case "output":
		if msg.Fd == "stderr" {
			p.stderr.push(msg.Data)
		} else {
			p.stdout.push(msg.Data)
		}
	case "exit":
		status := ExitStatus{ExitCode: msg.ExitCode, TimedOut: msg.TimedOut}
		if msg.Signal != nil {
			status.Signal = *msg.Signal
		}
		p.finish(status, nil)
	case "error":
		var err error = &Error{Code: "internal", Message: "the command failed"}
		if msg.Error != nil {
			err = msg.Error
		}
		p.finish(ExitStatus{}, err)
	}
}

func (p *Process) finish(status ExitStatus, err error) {
	p.once.Do(func() {
		p.mu.Lock()
		p.status, p.err = status, err
		p.mu.Unlock()
		p.stdout.close(err)
		p.stderr.close(err)
		close(p.done)
	})
}

// stream is an output pipe fed by events: pushes never block (the reader goroutine serves every
// process), reads block until data or the end.
type stream struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    bytes.Buffer
	closed bool
	err    error
}

func newStream() *stream {
	s := &stream{}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *stream) push(data []byte) {
	s.mu.Lock()
	s.buf.Write(data)
	s.mu.Unlock()
	s.cond.Broadcast()
}

func (s *stream) close(err error) {
	s.mu.Lock()
	s.closed, s.err = true, err
	s.mu.Unlock()
	s.cond.Broadcast()
}

func (s *stream) Read(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.buf.Len() == 0 && !s.closed {
		s.cond.Wait()
	}
	if s.buf.Len() > 0 {
		return s.buf.Read(b)
	}
	if s.err != nil {
		return 0, s.err
	}
	return 0, io.EOF
}

// all drains what is buffered (after the process finished).
func (s *stream) all() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]byte{}, s.buf.Bytes()...)
	s.buf.Reset()
	return out
}
