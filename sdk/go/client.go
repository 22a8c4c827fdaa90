// Package msb drives msb sandboxes from Go. It starts `msb api` as a child process and speaks
// its JSON-lines protocol (docs/api.md) over the child's stdin and stdout; every option, default
// and error is the TypeScript SDK's, since `msb api` is that SDK behind a line protocol.
//
// A Client is safe for concurrent use: requests run concurrently in the runtime and replies are
// matched by id. If the runtime process dies, every call in flight and every later call fails
// with an error matching ErrRuntimeExited that carries the tail of its stderr.
package msb

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Version is this SDK's version, sent to the runtime in the hello handshake.
const Version = "0.1.0"

// protocol is the API protocol version this SDK speaks.
const protocol = 1

// maxLine bounds one message from the runtime (a request may be 64 MiB; base64 adds a third).
const maxLine = 128 << 20

// stderrTail is how much of the runtime's stderr is kept for the error when it dies.
const stderrTail = 4096

// closeGrace is how long Close waits for `msb api` to finish its requests and stop the
// sandboxes it attached before killing it.
const closeGrace = 60 * time.Second

// Options configure Start.
type Options struct {
	// Binary is the msb executable. Empty: $MSB_BIN (from Env, then the environment), then
	// `msb` on PATH.
	Binary string
	// Env is added to this process's environment for the runtime ("KEY=value" entries), e.g.
	// MSB_HOME or MSB_BACKEND.
	Env []string
	// Stderr, if set, also receives the runtime's diagnostics.
	Stderr io.Writer
}

// Client is one `msb api` child process.
type Client struct {
	// RuntimeVersion is the msb version the runtime reported in the handshake.
	RuntimeVersion string

	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *tail

	writeMu sync.Mutex

	mu      sync.Mutex
	nextID  int64
	pending map[int64]*call
	procs   map[int64]*Process
	early   map[int64][]*message // events that arrived before their spawn reply was handled
	dead    error                // set once the runtime is gone
	closing bool

	done chan struct{} // closed when the reader has seen the runtime exit
}

type call struct {
	method string
	reply  chan *message
	// onResult runs on the reader goroutine before any later line is handled (spawn uses it to
	// register its process before that process's events arrive).
	onResult func(result json.RawMessage)
}

// message is any line from the runtime: a reply (id + result/error) or an event.
type message struct {
	ID       *int64          `json:"id"`
	Result   json.RawMessage `json:"result"`
	Error    *Error          `json:"error"`
	Event    string          `json:"event"`
	Process  int64           `json:"process"`
	Fd       string          `json:"fd"`
	Data     []byte          `json:"data"` // base64 in JSON; encoding/json decodes it
	ExitCode int             `json:"exitCode"`
	Code     *int            `json:"code"`
	Signal   *int            `json:"signal"`
	TimedOut bool            `json:"timedOut"`
}

// Start launches `msb api` and performs the hello handshake. ctx bounds the start and handshake
// only; the runtime lives until Close.
func Start(ctx context.Context, opts Options) (*Client, error) {
	binary, err := findBinary(opts)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, "api")
	cmd.Env = append(os.Environ(), opts.Env...)
	c := &Client{
		cmd:     cmd,
		stderr:  &tail{limit: stderrTail},
		pending: map[int64]*call{},
		procs:   map[int64]*Process{},
		early:   map[int64][]*message{},
		done:    make(chan struct{}),
	}
	var diagnostics io.Writer = c.stderr
	if opts.Stderr != nil {
		diagnostics = io.MultiWriter(c.stderr, opts.Stderr)
	}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	// Our own pipes rather than StdoutPipe or a Writer: cmd.Wait then returns when the runtime
	// exits even if a process it started still holds them, and does not close stdout under the
	// reader before it has drained it.
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	stderr, stderrW, err := os.Pipe()
	if err != nil {
		stdout.Close()
		stdoutW.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = stdoutW, stderrW
	err = cmd.Start()
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		stdout.Close()
		stderr.Close()
		return nil, fmt.Errorf("msb: cannot start %s api: %w", binary, err)
	}
	stderrDone := make(chan struct{})
	go func() {
		io.Copy(diagnostics, stderr)
		stderr.Close()
		close(stderrDone)
	}()
	go c.read(stdout, stderrDone)

	var hello struct {
		Protocol int    `json:"protocol"`
		Msb      string `json:"msb"`
	}
	params := map[string]any{"protocol": protocol, "client": "msb-go/" + Version}
	if err := c.call(ctx, "hello", params, &hello, nil); err != nil {
		c.kill()
		return nil, err
	}
	c.RuntimeVersion = hello.Msb
	return c, nil
}

func findBinary(opts Options) (string, error) {
	if opts.Binary != "" {
		return opts.Binary, nil
	}
	for i := len(opts.Env) - 1; i >= 0; i-- {
		if v := strings.TrimPrefix(opts.Env[i], "MSB_BIN="); v != opts.Env[i] && v != "" {
			return v, nil
		}
	}
	if v := os.Getenv("MSB_BIN"); v != "" {
		return v, nil
	}
	path, err := exec.LookPath("msb")
	if err != nil {
		return "", fmt.Errorf("msb: no msb binary: set Options.Binary or MSB_BIN, or put msb on PATH (%w)", err)
	}
	return path, nil
}

// Close ends the runtime's stdin and waits for it to exit: it finishes the requests in flight
// and lets go of its sandboxes, whose supervisors then stop those created without Detached
// (removing unnamed ones) on their own, shortly after Close returns. If the runtime has not
// exited after a minute it is killed. Close returns nil when the runtime exited cleanly.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.writeMu.Lock()
	c.stdin.Close()
	c.writeMu.Unlock()
	select {
	case <-c.done:
	case <-time.After(closeGrace):
		c.kill()
		<-c.done
	}
	if state := c.cmd.ProcessState; state != nil && state.Success() {
		return nil
	}
	return c.dead
}

func (c *Client) kill() {
	if c.cmd.Process != nil {
		c.cmd.Process.Kill()
	}
}

// Done is closed once the runtime process has exited.
func (c *Client) Done() <-chan struct{} { return c.done }

// Pid is the runtime process's id.
func (c *Client) Pid() int { return c.cmd.Process.Pid }

// read is the only reader of the runtime's stdout: it routes replies to their callers and events
// to their processes, and fails everything once the runtime is gone.
func (c *Client) read(stdout *os.File, stderrDone <-chan struct{}) {
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = c.cmd.Wait()
		close(exited)
	}()
	linesDone := make(chan error, 1)
	go func() { linesDone <- c.readLines(stdout) }()

	var problem error
	select {
	case problem = <-linesDone:
		// Its stdout ended (or spoke nonsense): the runtime is of no more use.
		if problem != nil {
			c.kill()
		}
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			c.kill()
			<-exited
		}
	case <-exited:
		// Replies it wrote before exiting are still in the pipe; read them, but do not wait
		// for a process it started that inherited the pipe.
		select {
		case problem = <-linesDone:
		case <-time.After(2 * time.Second):
			stdout.Close()
			<-linesDone
		}
	}
	stdout.Close()
	select { // the last words on stderr
	case <-stderrDone:
	case <-time.After(time.Second):
	}
	c.mu.Lock()
	what := "exited"
	if waitErr != nil {
		what = "exited (" + waitErr.Error() + ")"
	}
	text := "the msb api process " + what
	if problem != nil {
		text += ": " + problem.Error()
	}
	if t := strings.TrimSpace(c.stderr.String()); t != "" {
		text += "; its stderr ended with: " + t
	}
	c.dead = &Error{Code: CodeRuntimeExited, Message: text}
	pending, procs := c.pending, c.procs
	c.pending, c.procs = map[int64]*call{}, map[int64]*Process{}
	c.mu.Unlock()
	for _, pc := range pending {
		pc.reply <- &message{Error: c.dead.(*Error)}
	}
	for _, p := range procs {
		p.finish(ExitStatus{}, c.dead)
	}
	close(c.done)
}

// readLines routes every message on the runtime's stdout until it ends; nil means a clean end.
func (c *Client) readLines(stdout io.Reader) error {
	r := bufio.NewReaderSize(stdout, 64<<10)
	for {
		line, err := readLine(r)
		if err == io.EOF || errors.Is(err, os.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		msg := &message{}
		if err := json.Unmarshal(line, msg); err != nil {
			return fmt.Errorf("the runtime sent a line that is not a message (%v): %.200q", err, line)
		}
		c.route(msg)
	}
}

func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > maxLine {
			return nil, fmt.Errorf("the runtime sent a line longer than %d bytes", maxLine)
		}
		line = append(line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(line) > 0 {
			return line, nil
		}
		return line, err
	}
}

func (c *Client) route(msg *message) {
	if msg.Event != "" {
		c.mu.Lock()
		p := c.procs[msg.Process]
		if p == nil {
			// The runtime answers spawn before it streams, but keep order even if it did not.
			queued, known := c.early[msg.Process]
			if (known || len(c.early) < 64) && len(queued) < 1024 {
				c.early[msg.Process] = append(c.early[msg.Process], msg)
			}
			c.mu.Unlock()
			return
		}
		if msg.Event == "exit" || msg.Event == "error" {
			delete(c.procs, msg.Process)
		}
		c.mu.Unlock()
		p.event(msg)
		return
	}
	if msg.ID == nil {
		// A reply to no request (a parse error on a line we sent): nothing waits for it.
		return
	}
	c.mu.Lock()
	pc := c.pending[*msg.ID]
	delete(c.pending, *msg.ID)
	c.mu.Unlock()
	if pc == nil {
		return // its caller gave up (context cancelled)
	}
	if msg.Error == nil && pc.onResult != nil {
		pc.onResult(msg.Result)
	}
	pc.reply <- msg
}

// call sends one request and waits for its reply, decoding the result into out (if not nil).
func (c *Client) call(ctx context.Context, method string, params any, out any, onResult func(json.RawMessage)) error {
	c.mu.Lock()
	if c.dead != nil {
		c.mu.Unlock()
		return c.dead
	}
	c.nextID++
	id := c.nextID
	pc := &call{method: method, reply: make(chan *message, 1), onResult: onResult}
	c.pending[id] = pc
	c.mu.Unlock()

	line, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		c.forget(id)
		return fmt.Errorf("msb %s: cannot encode the request: %w", method, err)
	}
	line = append(line, '\n')
	c.writeMu.Lock()
	_, err = c.stdin.Write(line)
	c.writeMu.Unlock()
	if err != nil {
		// The reader reports why the runtime went away; wait for it rather than guess.
		select {
		case <-c.done:
			c.forget(id)
			return c.dead
		case <-time.After(5 * time.Second):
			c.forget(id)
			return fmt.Errorf("msb %s: cannot write to the msb api process: %w", method, err)
		}
	}
	select {
	case msg := <-pc.reply:
		if msg.Error != nil {
			e := *msg.Error
			if e.Code != CodeRuntimeExited {
				e.Method = method
			}
			return &e
		}
		if out != nil && len(msg.Result) > 0 {
			if err := json.Unmarshal(msg.Result, out); err != nil {
				return fmt.Errorf("msb %s: unexpected result %.200s: %w", method, msg.Result, err)
			}
		}
		return nil
	case <-ctx.Done():
		if onResult == nil {
			c.forget(id)
		} // else the reply still runs onResult, which cleans up what the request started
		return ctx.Err()
	}
}

func (c *Client) forget(id int64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// register makes p receive the events of runtime process id (called on the reader goroutine).
func (c *Client) register(id int64, p *Process) {
	c.mu.Lock()
	early := c.early[id]
	delete(c.early, id)
	if c.dead != nil {
		c.mu.Unlock()
		p.finish(ExitStatus{}, c.dead)
		return
	}
	c.procs[id] = p
	c.mu.Unlock()
	for _, msg := range early {
		if msg.Event == "exit" || msg.Event == "error" {
			c.mu.Lock()
			delete(c.procs, id)
			c.mu.Unlock()
		}
		p.event(msg)
	}
}

// tail keeps the last limit bytes written to it.
type tail struct {
	mu    sync.Mutex
	limit int
	buf   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
