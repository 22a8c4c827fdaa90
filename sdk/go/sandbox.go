// Sandboxes: creating, finding, listing and removing them, and what a Sandbox handle does
// (lifecycle and files). Commands are in process.go.

package msb

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"time"
)

// SandboxOptions are the TypeScript SDK's sandbox options (src/config.ts); a zero field means
// the runtime's default. The runtime validates them and names a bad key in an ErrInvalidOptions.
type SandboxOptions struct {
	// Image reference; empty: the default image.
	Image string `json:"image,omitempty"`
	// Name makes the sandbox named (kept after it stops); empty: an ephemeral msb-xxxxxxxx.
	Name string `json:"name,omitempty"`
	// Pull policy: "always", "if-missing" (default) or "never".
	Pull string `json:"pull,omitempty"`
	// Insecure: a plain-HTTP registry.
	Insecure  *bool             `json:"insecure,omitempty"`
	Cpus      int               `json:"cpus,omitempty"`
	MemoryMiB int               `json:"memoryMiB,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	Workdir   string            `json:"workdir,omitempty"`
	// User commands run as: a name from the image's /etc/passwd, UID or UID:GID.
	User string `json:"user,omitempty"`
	// Network: "none", "public" (default) or "all".
	Network string `json:"network,omitempty"`
	// Allow and Deny are egress rules such as "tcp:api.example.com:443" or "cidr:10.1.0.0/16".
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
	// Ports to publish, "[IP:]HOST:GUEST[/udp]".
	Ports []string `json:"ports,omitempty"`
	// Detached sandboxes keep running after the Client closes.
	Detached bool `json:"detached,omitempty"`
	// Command is a main command run once the sandbox is up; the sandbox stops when it exits.
	Command            []string          `json:"command,omitempty"`
	Hostname           string            `json:"hostname,omitempty"`
	Labels             map[string]string `json:"labels,omitempty"`
	MaxDurationSeconds float64           `json:"maxDurationSeconds,omitempty"`
	IdleTimeoutSeconds float64           `json:"idleTimeoutSeconds,omitempty"`
	DiskSizeMiB        int               `json:"diskSizeMiB,omitempty"`
	BootTimeoutSeconds float64           `json:"bootTimeoutSeconds,omitempty"`
	// Backend: "qemu" or "native"; empty: $MSB_BACKEND or the runtime's choice.
	Backend string `json:"backend,omitempty"`
	// Volumes as src/volumes.ts describes them (objects or strings), passed through as JSON.
	Volumes []any `json:"volumes,omitempty"`
	// Secrets the guest sees only as placeholders (see Secret).
	Secrets []Secret `json:"secrets,omitempty"`
	// Extra options by their JSON name, for options this struct does not name; they override
	// the fields above.
	Extra map[string]any `json:"-"`
}

func (o SandboxOptions) wire() (map[string]any, error) {
	raw, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("msb create: cannot encode the options: %w", err)
	}
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	for k, v := range o.Extra {
		out[k] = v
	}
	return out, nil
}

// Secret is a value the guest never holds: its environment has Name=$MSB_<Name>, and the runtime
// puts Value into HTTPS requests (headers and Basic auth; the URL with Query, the body with Body)
// only toward the Allow hosts ("api.example.com", or "*.example.com" for subdomains). Value is
// kept in the sandbox's supervisor's memory only, never on disk.
type Secret struct {
	Name  string   `json:"name"`
	Value string   `json:"value,omitempty"`
	Allow []string `json:"allow"`
	Query bool     `json:"query,omitempty"`
	Body  bool     `json:"body,omitempty"`
}

// Sandbox is a handle on a running sandbox reached through a Client.
type Sandbox struct {
	// Name is the sandbox's name (generated for unnamed ones).
	Name string
	c    *Client
}

// SandboxInfo is what List reports about a recorded sandbox.
type SandboxInfo struct {
	Name       string            `json:"name"`
	Status     string            `json:"status"`
	Ephemeral  bool              `json:"ephemeral"`
	Image      string            `json:"image"`
	ImageID    string            `json:"imageId"`
	Labels     map[string]string `json:"labels"`
	CreatedAt  string            `json:"createdAt"`
	StartedAt  string            `json:"startedAt"`
	StoppedAt  string            `json:"stoppedAt"`
	ExitReason string            `json:"exitReason"`
}

// Create starts a sandbox (pulling its image per the pull policy) and returns once its agent
// answers. Without Detached it stops when the Client closes or its process dies. If ctx is
// cancelled, Create returns ctx.Err() while the runtime still finishes creating it; the sandbox
// then belongs to the Client like any other (unnamed: removed when the Client closes).
func (c *Client) Create(ctx context.Context, opts SandboxOptions) (*Sandbox, error) {
	options, err := opts.wire()
	if err != nil {
		return nil, err
	}
	var out struct {
		Name string `json:"name"`
	}
	if err := c.call(ctx, "create", map[string]any{"options": options}, &out, nil); err != nil {
		return nil, err
	}
	return &Sandbox{Name: out.Name, c: c}, nil
}

// Get connects to a running sandbox by name.
func (c *Client) Get(ctx context.Context, name string) (*Sandbox, error) {
	var out struct {
		Name string `json:"name"`
	}
	if err := c.call(ctx, "get", map[string]any{"name": name}, &out, nil); err != nil {
		return nil, err
	}
	return &Sandbox{Name: out.Name, c: c}, nil
}

// List reports every recorded sandbox, running or not.
func (c *Client) List(ctx context.Context) ([]SandboxInfo, error) {
	var out struct {
		Sandboxes []SandboxInfo `json:"sandboxes"`
	}
	if err := c.call(ctx, "list", map[string]any{}, &out, nil); err != nil {
		return nil, err
	}
	return out.Sandboxes, nil
}

// Remove deletes a sandbox's record and storage; force stops it first if it runs.
func (c *Client) Remove(ctx context.Context, name string, force bool) error {
	return c.call(ctx, "remove", map[string]any{"name": name, "force": force}, nil, nil)
}

// Stop powers the sandbox off cleanly; if ctx has a deadline the runtime kills the VM when it
// passes, otherwise after its own default timeout.
func (s *Sandbox) Stop(ctx context.Context) error {
	params := map[string]any{"name": s.Name}
	if deadline, ok := ctx.Deadline(); ok {
		if ms := time.Until(deadline).Milliseconds(); ms > 0 {
			params["timeoutMs"] = ms
		}
	}
	return s.c.call(ctx, "stop", params, nil, nil)
}

// Kill ends the sandbox's VM at once.
func (s *Sandbox) Kill(ctx context.Context) error {
	return s.c.call(ctx, "kill", map[string]any{"name": s.Name}, nil, nil)
}

// Remove deletes the sandbox; force stops it first if it runs.
func (s *Sandbox) Remove(ctx context.Context, force bool) error {
	return s.c.Remove(ctx, s.Name, force)
}

// FileInfo describes a path in the sandbox.
type FileInfo struct {
	// Type: "file", "directory", "symlink", "fifo", "socket", "char", "block" or "unknown".
	Type    string  `json:"type"`
	Size    int64   `json:"size"`
	Mode    uint32  `json:"mode"` // permission bits (0o7777)
	MtimeMs float64 `json:"mtimeMs"`
	UID     int     `json:"uid"`
	GID     int     `json:"gid"`
	Target  string  `json:"target,omitempty"` // a symlink's target
}

// DirEntry is one entry of ListDir.
type DirEntry struct {
	Name string `json:"name"`
	FileInfo
}

// ReadFile returns a file's contents.
func (s *Sandbox) ReadFile(ctx context.Context, path string) ([]byte, error) {
	var out struct {
		Data []byte `json:"data"`
	}
	if err := s.c.call(ctx, "read_file", map[string]any{"name": s.Name, "path": path}, &out, nil); err != nil {
		return nil, err
	}
	if out.Data == nil {
		out.Data = []byte{}
	}
	return out.Data, nil
}

// WriteFile creates or replaces a file; perm 0 leaves the runtime's default mode.
func (s *Sandbox) WriteFile(ctx context.Context, path string, data []byte, perm fs.FileMode) error {
	params := map[string]any{"name": s.Name, "path": path, "data": data}
	if perm != 0 {
		params["mode"] = modeBits(perm)
	}
	if data == nil {
		params["data"] = ""
	}
	return s.c.call(ctx, "write_file", params, nil, nil)
}

// Stat describes a path.
func (s *Sandbox) Stat(ctx context.Context, path string) (*FileInfo, error) {
	out := &FileInfo{}
	if err := s.c.call(ctx, "stat", map[string]any{"name": s.Name, "path": path}, out, nil); err != nil {
		return nil, err
	}
	return out, nil
}

// Exists reports whether a path exists.
func (s *Sandbox) Exists(ctx context.Context, path string) (bool, error) {
	var out struct {
		Exists bool `json:"exists"`
	}
	err := s.c.call(ctx, "exists", map[string]any{"name": s.Name, "path": path}, &out, nil)
	return out.Exists, err
}

// ListDir lists a directory.
func (s *Sandbox) ListDir(ctx context.Context, path string) ([]DirEntry, error) {
	var out struct {
		Entries []DirEntry `json:"entries"`
	}
	if err := s.c.call(ctx, "list_dir", map[string]any{"name": s.Name, "path": path}, &out, nil); err != nil {
		return nil, err
	}
	return out.Entries, nil
}

// Mkdir creates a directory (and its parents if parents is set).
func (s *Sandbox) Mkdir(ctx context.Context, path string, parents bool) error {
	return s.c.call(ctx, "mkdir", map[string]any{"name": s.Name, "path": path, "parents": parents}, nil, nil)
}

// RemovePath removes a file or directory (a non-empty one only if recursive).
func (s *Sandbox) RemovePath(ctx context.Context, path string, recursive bool) error {
	return s.c.call(ctx, "remove_path", map[string]any{"name": s.Name, "path": path, "recursive": recursive}, nil, nil)
}

// Rename moves a path.
func (s *Sandbox) Rename(ctx context.Context, from, to string) error {
	return s.c.call(ctx, "rename", map[string]any{"name": s.Name, "from": from, "to": to}, nil, nil)
}

// Chmod sets a path's permission bits.
func (s *Sandbox) Chmod(ctx context.Context, path string, mode fs.FileMode) error {
	return s.c.call(ctx, "chmod", map[string]any{"name": s.Name, "path": path, "mode": modeBits(mode)}, nil, nil)
}

// modeBits turns Go's FileMode into the Unix permission bits the runtime takes (0o7777).
func modeBits(m fs.FileMode) uint32 {
	bits := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		bits |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		bits |= 0o1000
	}
	return bits
}
