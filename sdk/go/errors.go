// Errors of the Go SDK: the runtime's error codes (docs/api.md, "Errors") as *Error values that
// errors.Is matches against the sentinels below, so callers branch on meaning, not on strings.

package msb

import (
	"errors"
	"strings"
)

// Sentinels for errors.Is. An *Error matches the sentinel of its code; the message is for people.
var (
	// ErrSandboxNotFound: no sandbox of that name (code not_found on a sandbox).
	ErrSandboxNotFound = errors.New("msb: sandbox not found")
	// ErrNotFound: any not_found — a sandbox, a process, or a path inside the sandbox.
	ErrNotFound = errors.New("msb: not found")
	// ErrImageNotFound: the image is not in the registry (NOT_FOUND), or not in the local store
	// while the pull policy is "never" (NOT_IN_STORE).
	ErrImageNotFound = errors.New("msb: image not found")
	// ErrAlreadyExists: a sandbox of that name exists.
	ErrAlreadyExists = errors.New("msb: sandbox already exists")
	// ErrNotRunning: the sandbox is not running.
	ErrNotRunning = errors.New("msb: sandbox not running")
	// ErrInvalidOptions: bad sandbox options or request parameters (the message names the key).
	ErrInvalidOptions = errors.New("msb: invalid options")
	// ErrProtocol: the SDK and the runtime disagree about the API (version, protocol, parse, ...).
	ErrProtocol = errors.New("msb: API protocol error")
	// ErrRuntimeExited: the `msb api` process is gone; the message carries its stderr tail.
	ErrRuntimeExited = errors.New("msb: runtime process exited")
)

// CodeRuntimeExited is the Code of the error every call gets once `msb api` has exited.
const CodeRuntimeExited = "runtime_exited"

// Error is a failure reported by the runtime (or the loss of it).
type Error struct {
	// Code is stable and meant for branching: not_found, already_exists, not_running,
	// invalid_config, NOT_IN_STORE, ... (docs/api.md).
	Code string `json:"code"`
	// Message says what happened and names the sandbox, image or path.
	Message string `json:"message"`
	// Method is the API method that failed ("exec", "create", ...); empty for process events.
	Method string `json:"-"`
}

func (e *Error) Error() string {
	if e.Method == "" {
		return "msb: " + e.Message + " [" + e.Code + "]"
	}
	return "msb " + e.Method + ": " + e.Message + " [" + e.Code + "]"
}

// Is lets errors.Is(err, msb.ErrNotRunning) and friends match on the code.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == "not_found"
	case ErrSandboxNotFound:
		if e.Code != "not_found" {
			return false
		}
		// Lifecycle methods only address sandboxes; elsewhere a path or process may be missing.
		switch e.Method {
		case "get", "stop", "kill", "remove":
			return true
		}
		return strings.HasPrefix(e.Message, "no sandbox")
	case ErrImageNotFound:
		return e.Code == "NOT_FOUND" || e.Code == "NOT_IN_STORE"
	case ErrAlreadyExists:
		return e.Code == "already_exists"
	case ErrNotRunning:
		return e.Code == "not_running"
	case ErrInvalidOptions:
		return e.Code == "invalid_config" || e.Code == "invalid_params"
	case ErrProtocol:
		switch e.Code {
		case "version", "protocol", "unknown_method", "parse", "too_large":
			return true
		}
	case ErrRuntimeExited:
		return e.Code == CodeRuntimeExited
	}
	return false
}
