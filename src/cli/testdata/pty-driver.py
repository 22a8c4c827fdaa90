# Drives a command on a real pseudo-terminal: types keys, resizes, prints what the terminal showed.
import os, pty, sys, time, fcntl, termios, struct, signal, select, json
script = json.loads(sys.argv[1])  # list of [action, arg]
argv = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
out = b""
def pump(seconds):
    global out
    end = time.time() + seconds
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return False
            if not data:
                return False
            out += data
    return True
for action, arg in script:
    if action == "wait": pump(arg)
    elif action == "type": os.write(fd, arg.encode())
    elif action == "until":
        end = time.time() + 60
        while arg.encode() not in out and time.time() < end:
            if not pump(0.1): break
    elif action == "resize":
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", arg[1], arg[0], 0, 0))
        os.kill(pid, signal.SIGWINCH)
pump(1)
_, status = os.waitpid(pid, 0)
sys.stdout.write(json.dumps({"output": out.decode(errors="replace"), "code": os.waitstatus_to_exitcode(status)}))
