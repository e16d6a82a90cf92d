"""Integration tests of python/ternd_client against the real ternd.

Environment (set by tests/daemon/CMakeLists.txt): TERND_PATH (daemon),
TERNCTL_PATH (for `ternctl run --json`, the cross-check), DEMO_MODEL.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from ternd_client import AsyncClient, Client, TerndError, protocol_pb2 as pb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def row(seed, n=16):
    return [((seed * 7 + i * 3) % 11) / 5.0 - 1.0 for i in range(n)]


class TerndClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="ternd-py-")
        cls.sock = os.path.join(cls.dir, "t.sock")
        config = os.path.join(cls.dir, "ternd.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nsocket = "{cls.sock}"\n'
                    f'[runtime]\nmodel = "{os.environ["DEMO_MODEL"]}"\nworkers = 2\n')
        cls.log = open(os.path.join(cls.dir, "ternd.log"), "w")
        cls.proc = subprocess.Popen([os.environ["TERND_PATH"], "--config", config],
                                    stderr=cls.log)
        for _ in range(500):
            if os.path.exists(cls.sock):
                break
            time.sleep(0.01)
        time.sleep(0.05)

    @classmethod
    def tearDownClass(cls):
        cls.proc.send_signal(signal.SIGTERM)
        assert cls.proc.wait(10) == 0
        cls.log.close()
        shutil.rmtree(cls.dir)

    def expected(self, rows):
        out = subprocess.run(
            [os.environ["TERNCTL_PATH"], "run", os.environ["DEMO_MODEL"], "--json",
             "--values"] + [repr(v) for r in rows for v in r],
            check=True, capture_output=True, text=True).stdout
        return json.loads(out)["outputs"]

    def test_protocol_pb2_matches_the_schema(self):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["protoc", f"-I{ROOT}", f"--python_out={tmp}",
                            os.path.join(ROOT, "daemon/protocol.proto")], check=True)
            with open(os.path.join(tmp, "daemon/protocol_pb2.py")) as f:
                fresh = f.read()
        with open(os.path.join(ROOT, "python/ternd_client/protocol_pb2.py")) as f:
            self.assertEqual(f.read(), fresh,
                             "run python/ternd_client/regen_protocol_pb2.sh")

    def test_infer_matches_ternctl_run(self):
        rows = [row(1), row(2), row(3)]
        with Client(self.sock) as c:
            out = c.infer({"x": rows})
        want = self.expected(rows)
        self.assertEqual(out["probs"].shape, [3, 4])
        for got_row, want_row in zip(out["probs"].rows(), want["probs"]):
            for g, w in zip(got_row, want_row):
                self.assertAlmostEqual(g, w, places=5)
        self.assertEqual([int(v) for v in out["class"].values], [r[0] for r in want["class"]])
        self.assertEqual(out["class"].dtype, "I32")

    def test_numpy_input_and_output(self):
        import numpy as np
        x = np.array([row(4), row(5)], dtype=np.float32)
        with Client(self.sock) as c:
            out = c.infer({"x": x}, outputs=["probs"])
        self.assertEqual(list(out), ["probs"])
        probs = out["probs"].numpy()
        self.assertEqual(probs.shape, (2, 4))
        np.testing.assert_allclose(probs.sum(axis=1), [1.0, 1.0], rtol=1e-5)

    def test_model_info_health_stats(self):
        with Client(self.sock) as c:
            info = c.model_info()
            self.assertEqual(info.inputs[0].name, "x")
            self.assertEqual(info.inputs[0].features, 16)
            self.assertEqual(info.workers, 2)
            h = c.health()
            self.assertTrue(h.live and h.ready)
            c.infer({"x": row(1)})
            s = c.stats()
            self.assertGreaterEqual(s.inferences_total, 1)

    def test_errors_raise_with_the_code(self):
        with Client(self.sock) as c:
            with self.assertRaises(TerndError) as e:
                c.infer({"y": row(1)})
            self.assertEqual(e.exception.code_name, "INVALID_ARGUMENT")
            self.assertIn("'y' is not an input", e.exception.message)
            with self.assertRaises(TerndError) as e:
                c.infer({"x": row(1, 15)})
            self.assertEqual(e.exception.code, 3)
            self.assertTrue(c.health().ready)  # connection still usable

    def test_pipelined_send_receive(self):
        with Client(self.sock) as c:
            ids = [c.send(pb.Request(infer=pb.InferRequest(inputs=[
                pb.Tensor(name="x", dtype=pb.F32, shape=[1, 16],
                          data=__import__("array").array("f", row(i)).tobytes())])))
                   for i in range(100)]
            got = sorted(c.receive().id for _ in ids)
        self.assertEqual(got, ids)

    def test_async_client_concurrent_calls(self):
        async def main():
            c = await AsyncClient.connect(self.sock)
            try:
                outs = await asyncio.gather(*(c.infer({"x": row(i)}) for i in range(64)))
                health = await c.health()
                return outs, health
            finally:
                await c.close()
        outs, health = asyncio.run(main())
        self.assertTrue(health.ready)
        self.assertEqual(len(outs), 64)
        want = self.expected([row(5)])
        self.assertAlmostEqual(outs[5]["probs"].values[0], want["probs"][0][0], places=5)

    def test_connect_failure_is_unavailable(self):
        with self.assertRaises(TerndError) as e:
            Client(os.path.join(self.dir, "absent.sock"))
        self.assertEqual(e.exception.code_name, "UNAVAILABLE")

    def test_python_client_doc_examples_run(self):
        """docs/python-client.md: every python block runs as written (those
        of the Generate section in test_ternd_generate.py)."""
        blocks = doc_blocks(language_model=False)
        self.assertGreaterEqual(len(blocks), 5)
        run_doc_blocks(self, self.sock, blocks)


GENERATE_SECTION = "## Generate (language models)"


def doc_blocks(language_model):
    """The python blocks of docs/python-client.md: those of its Generate
    section (`language_model`), which need a daemon serving a language
    model, or all the others, which run against the demo model."""
    import re
    with open(os.path.join(ROOT, "docs", "python-client.md")) as f:
        sections = re.split(r"\n(?=## )", f.read())
    return [block for section in sections
            if section.startswith(GENERATE_SECTION) == language_model
            for block in re.findall(r"```python\n(.*?)```", section, re.S)]


def run_doc_blocks(test, sock, blocks):
    """Runs each block with $TERND_SOCKET set to `sock`, one subTest each."""
    import contextlib
    import io
    old = os.environ.get("TERND_SOCKET")
    os.environ["TERND_SOCKET"] = sock
    try:
        for i, code in enumerate(blocks):
            out = io.StringIO()
            with test.subTest(block=i), contextlib.redirect_stdout(out):
                exec(compile(code, f"python-client.md block {i}", "exec"), {})
            if "INVALID_ARGUMENT" in code:
                test.assertIn("INVALID_ARGUMENT", out.getvalue())
    finally:
        if old is None:
            del os.environ["TERND_SOCKET"]
        else:
            os.environ["TERND_SOCKET"] = old

if __name__ == "__main__":
    unittest.main()
