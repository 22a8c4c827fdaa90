# Runs inside a real Debian image booted by kernel.test.ts: the things Python programs commonly
# need from the kernel, one "REAL <name> ok|FAIL <why>" line each.
import asyncio, ctypes, hashlib, multiprocessing, os, pty, select, socket, sqlite3, ssl, subprocess, sys, tempfile, threading, time


def check(name, fn):
    try:
        result = fn()
        print(f"REAL {name} {'ok' if result else 'FAIL returned ' + repr(result)}", flush=True)
    except Exception as e:  # report, keep going: each line is asserted separately
        print(f"REAL {name} FAIL {type(e).__name__}: {e}", flush=True)


def square(x):
    return x * x


def sqlite():
    db = sqlite3.connect(":memory:")
    db.execute("create table t(x)")
    db.execute("insert into t values (42)")
    return db.execute("select x from t").fetchone()[0] == 42


def pool():
    with multiprocessing.Pool(2) as p:
        return p.map(square, range(10)) == [x * x for x in range(10)]


def semaphore():  # POSIX named semaphore in /dev/shm
    s = multiprocessing.Semaphore(1)
    return s.acquire(timeout=5) and (s.release() or True)


async def echo_over(host):
    async def handle(r, w):
        w.write(await r.read(4))
        await w.drain()
        w.close()
    server = await asyncio.start_server(handle, host, 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection(host, port)
    w.write(b"ping")
    await w.drain()
    data = await r.read(4)
    w.close()
    server.close()
    return data == b"ping"


def pseudo_terminal():
    m, s = pty.openpty()
    os.write(m, b"x\n")
    return os.read(s, 2) == b"x\n"


def short_sleep():  # needs high-resolution timers: a 10 ms sleep must not take a 4 ms tick multiple
    t0 = time.monotonic()
    time.sleep(0.01)
    return 0.009 < time.monotonic() - t0 < 0.5


def threads():
    ts = [threading.Thread(target=hashlib.sha256, args=(b"x" * 100000,)) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return True


def xattr_on_tmp():
    with tempfile.NamedTemporaryFile(dir="/dev/shm") as f:
        os.setxattr(f.name, "trusted.msb", b"v")
        return os.getxattr(f.name, "trusted.msb") == b"v"


check("python", lambda: sys.version_info >= (3, 11))
check("ssl", lambda: ssl.create_default_context() is not None)
check("sqlite", sqlite)
check("subprocess", lambda: subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip() != "")
check("multiprocessing", pool)
check("posix-semaphore", semaphore)
check("asyncio-ipv4", lambda: asyncio.run(echo_over("127.0.0.1")))
check("asyncio-ipv6", lambda: asyncio.run(echo_over("::1")))
check("pty", pseudo_terminal)
check("sleep-10ms", short_sleep)
check("getrandom", lambda: len(os.getrandom(16, os.GRND_NONBLOCK)) == 16)
check("ctypes", lambda: ctypes.CDLL(None).getpid() == os.getpid())
check("threads", threads)
check("epoll", lambda: select.epoll() is not None)
check("xattr", xattr_on_tmp)
