"""The Python SDK against the real runtime: dist/msb on the qemu backend, in a temporary MSB_HOME.

Run: python3 -m unittest discover -s sdk/python/tests -v   (from the repository root)
"""

import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "sdk", "python"))

import msb  # noqa: E402

BINARY = os.path.join(ROOT, "dist", "msb")


def processes_of(home):
    """Processes still running with this MSB_HOME (supervisors, VMs, msb api)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"MSB_HOME={home}".encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            found.append(pid)
        except OSError:
            pass
    return found


def eventually(check, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


@unittest.skipUnless(os.path.exists(BINARY), f"{BINARY} is missing: run scripts/setup.sh first")
class SdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.home = tempfile.mkdtemp(prefix="msb-python-")
        cls.env = {"MSB_HOME": cls.home, "MSB_BACKEND": "qemu"}
        cls.client = msb.Client(binary=BINARY, env=cls.env)
        cls.sandbox = cls.client.create(memory_mib=256, name="py-sdk")

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        ok = eventually(lambda: not processes_of(cls.home))
        shutil.rmtree(cls.home, ignore_errors=True)
        assert ok, "processes were left running"

    def test_exec_exit_code_and_separate_streams(self):
        result = self.sandbox.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
        self.assertEqual(result.exit_code, 3)
        self.assertEqual(result.stdout, b"out\n")
        self.assertEqual(result.stderr, b"err\n")
        shell = self.sandbox.exec("echo $((6 * 7))", env={"X": "1"}, cwd="/tmp")
        self.assertEqual(shell.stdout_text, "42\n")

    def test_stdin_and_timeout(self):
        self.assertEqual(self.sandbox.exec(["cat"], stdin=b"from python").stdout, b"from python")
        slow = self.sandbox.exec(["sleep", "30"], timeout=1)
        self.assertTrue(slow.timed_out)

    def test_streaming_output_arrives_while_the_command_runs(self):
        process = self.sandbox.spawn("for i in 1 2 3; do echo line $i; sleep 0.3; done", stdin=False)
        first = process.stdout.readline()
        self.assertEqual(first, b"line 1\n")
        rest = process.stdout.read()
        self.assertEqual(rest, b"line 2\nline 3\n")
        self.assertEqual(process.wait().exit_code, 0)

    def test_streaming_stdin_and_signals(self):
        process = self.sandbox.spawn(["cat"], stdin=True)
        process.write(b"hello ")
        process.write("world")
        process.close_stdin()
        self.assertEqual(process.stdout.read(), b"hello world")
        self.assertEqual(process.wait().code, 0)
        sleeper = self.sandbox.spawn(["sleep", "60"])
        sleeper.signal(signal.SIGTERM)
        status = sleeper.wait(timeout=30)
        self.assertEqual(status.signal, signal.SIGTERM)
        self.assertEqual(status.exit_code, 128 + signal.SIGTERM)

    def test_file_round_trip(self):
        data = bytes(range(256)) * 1000
        self.assertEqual(self.sandbox.fs.write("/tmp/blob.bin", data, mode=0o640), len(data))
        self.assertEqual(self.sandbox.fs.read("/tmp/blob.bin"), data)
        self.assertEqual(self.sandbox.fs.stat("/tmp/blob.bin")["size"], len(data))
        self.assertTrue(self.sandbox.fs.exists("/tmp/blob.bin"))
        self.sandbox.fs.mkdir("/tmp/a/b", parents=True)
        self.sandbox.fs.rename("/tmp/blob.bin", "/tmp/a/b/moved.bin")
        self.assertEqual([e["name"] for e in self.sandbox.fs.listdir("/tmp/a/b")], ["moved.bin"])
        self.sandbox.fs.remove("/tmp/a", recursive=True)
        self.assertFalse(self.sandbox.fs.exists("/tmp/a"))
        with self.assertRaises(msb.PathNotFound) as missing:
            self.sandbox.fs.read("/tmp/a/b/moved.bin")
        self.assertIn("/tmp/a/b/moved.bin", str(missing.exception))

    def test_typed_errors(self):
        with self.assertRaises(msb.ImageNotFound) as missing_image:
            self.client.create("localhost:5999/nope:1", pull="never")
        self.assertIn("localhost:5999/nope:1", str(missing_image.exception))
        with self.assertRaises(msb.SandboxNotFound) as missing_sandbox:
            self.client.get("ghost")
        self.assertIn("ghost", missing_sandbox.exception.message)
        with self.assertRaises(msb.InvalidOptions) as bad_option:
            self.client.create(cpu_count=2)
        self.assertIn("cpuCount", str(bad_option.exception))
        with self.assertRaises(msb.InvalidOptions):
            self.client.create(memory_mib="lots")

    def test_list_get_and_a_second_client(self):
        names = [s["name"] for s in self.client.list()]
        self.assertIn("py-sdk", names)
        with msb.Client(binary=BINARY, env=self.env) as other:
            found = other.get("py-sdk")
            self.assertEqual(found.exec(["echo", "from another client"]).stdout, b"from another client\n")
        # The other client went away; the sandbox it only found keeps running.
        self.assertEqual(self.sandbox.exec(["true"]).exit_code, 0)


@unittest.skipUnless(os.path.exists(BINARY), f"{BINARY} is missing: run scripts/setup.sh first")
class LifecycleTest(unittest.TestCase):
    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="msb-python-")
        self.env = {"MSB_HOME": self.home, "MSB_BACKEND": "qemu"}

    def tearDown(self):
        ok = eventually(lambda: not processes_of(self.home))
        shutil.rmtree(self.home, ignore_errors=True)
        self.assertTrue(ok, "processes were left running")

    def test_stop_and_remove_leave_nothing(self):
        with msb.Client(binary=BINARY, env=self.env) as client:
            sandbox = client.create(name="stopper", memory_mib=256)
            sandbox.stop()
            self.assertEqual([s["status"] for s in client.list()], ["stopped"])
            sandbox.remove()
            self.assertEqual(client.list(), [])

    def test_secrets_reach_the_guest_only_as_placeholders(self):
        value = "py-" + os.urandom(12).hex()
        with msb.Client(binary=BINARY, env=self.env) as client:
            with client.create(memory_mib=256, secrets=[{"name": "PY_KEY", "value": value, "allow": ["api.example.com"]}]) as sandbox:
                result = sandbox.exec('echo "$PY_KEY"; echo "$NODE_EXTRA_CA_CERTS"')
                self.assertEqual(result.stdout_text, "$MSB_PY_KEY\n/etc/msb/ca.pem\n")
                self.assertNotIn(value.encode(), result.stdout)
            with self.assertRaises(msb.MsbError) as raised:
                client.create(memory_mib=256, secrets=[{"name": "PY_KEY", "value": "bad\nvalue", "allow": ["api.example.com"]}])
            self.assertIn("PY_KEY", str(raised.exception))
            self.assertNotIn("bad\nvalue", str(raised.exception))

    def test_context_manager_removes_an_unnamed_sandbox(self):
        with msb.Client(binary=BINARY, env=self.env) as client:
            with client.create(memory_mib=256) as sandbox:
                self.assertEqual(sandbox.exec(["true"]).exit_code, 0)
            self.assertEqual(client.list(), [])

    def test_a_killed_runtime_fails_calls_promptly(self):
        client = msb.Client(binary=BINARY, env=self.env)
        sandbox = client.create(memory_mib=256)
        process = sandbox.spawn(["sleep", "600"])
        client._proc.send_signal(signal.SIGKILL)
        started = time.time()
        with self.assertRaises(msb.RuntimeExited):
            process.wait(timeout=30)
        with self.assertRaises(msb.RuntimeExited):
            sandbox.exec(["true"])
        self.assertLess(time.time() - started, 10)
        client.close()


if __name__ == "__main__":
    unittest.main()
