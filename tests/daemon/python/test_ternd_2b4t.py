"""The BitNet b1.58 2B4T shapes end to end: a random-weight GGUF with the
exact shapes of the released model (hidden 2560, FFN 6912, 30 layers, 20
heads, 5 KV heads, vocabulary 128256, tied F16 embeddings, I2_S ternary:
1.2 GB) is written by `python3 -m ternd.make_2b4t`, converted by
`ternctl convert` (int8 head), served by the daemon in one slot (cold
swap), and streams tokens through `ternctl generate` (the C++ client) and
the Python clients, blocking and asyncio, which must agree token for token.

The files are made in a temporary directory and removed (never committed).
Takes about a minute and 3 GB of disk, 2 GB of memory at the peak.

Environment (set by tests/daemon/CMakeLists.txt): TERND_PATH, TERNCTL_PATH.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from ternd_client import AsyncClient, Client

CONTEXT = 256
PROMPT = [128000, 791, 12585, 6916]  # any ids below the vocabulary


class TwoB4TTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="ternd-2b4t-")
        gguf = os.path.join(cls.dir, "bitnet-2b4t-random.gguf")
        cls.model = os.path.join(cls.dir, "bitnet-2b4t.tern")
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "ternd.make_2b4t", "2b4t", "-o", gguf],
                       check=True)
        t1 = time.monotonic()
        convert = subprocess.run([os.environ["TERNCTL_PATH"], "convert", gguf,
                                  "-o", cls.model],
                                 check=True, capture_output=True, text=True)
        t2 = time.monotonic()
        cls.convert_output = convert.stdout + convert.stderr
        os.unlink(gguf)  # 1.2 GB less on disk from here on
        cls.sock = os.path.join(cls.dir, "t.sock")
        config = os.path.join(cls.dir, "ternd.toml")
        with open(config, "w") as f:
            # One slot (cold swap): weights ~813 MiB, the KV cache of 256
            # tokens x 2 sequences 39 MiB, scratch.
            f.write(f'[server]\nsocket = "{cls.sock}"\n'
                    f'[runtime]\nmodel = "{cls.model}"\narena_mb = 900\nswap = "cold"\n'
                    f'[llm]\nthreads = 2\nsequences = 2\nmax_context = {CONTEXT}\n')
        cls.log_path = os.path.join(cls.dir, "ternd.log")
        cls.log = open(cls.log_path, "w")
        cls.proc = subprocess.Popen([os.environ["TERND_PATH"], "--config", config],
                                    stderr=cls.log)
        # The daemon answers once the model is placed and its golden check
        # (greedy tokens recorded by convert) has passed.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if cls.proc.poll() is not None:
                break
            if os.path.exists(cls.sock):
                try:
                    with Client(cls.sock) as c:
                        if c.health().ready:
                            break
                except OSError:
                    pass
            time.sleep(0.1)
        t3 = time.monotonic()
        print(f"\n2B4T: GGUF written in {t1 - t0:.1f} s, converted in {t2 - t1:.1f} s, "
              f"daemon ready in {t3 - t2:.1f} s", file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        if cls.proc.poll() is None:
            cls.proc.send_signal(signal.SIGTERM)
            cls.proc.wait(30)
        cls.log.close()
        shutil.rmtree(cls.dir)

    def daemon_log(self):
        with open(self.log_path) as f:
            return f.read()

    def test_serves_the_2b4t_shapes(self):
        self.assertIsNone(self.proc.poll(), "the daemon exited:\n" + self.daemon_log())
        with Client(self.sock) as c:
            info = c.model_info()
        lm = info.language_model
        self.assertEqual((lm.architecture, lm.layers, lm.embedding, lm.vocab),
                         ("bitnet-b1.58", 30, 2560, 128256), self.convert_output)
        self.assertEqual((lm.context, lm.sequences, lm.head), (CONTEXT, 2, "I8"))
        self.assertEqual(lm.ternary_matrices, 210)
        self.assertGreater(lm.bytes_per_token, 800_000_000)

        # ternctl generate (the C++ client), greedy, as JSON lines.
        out = subprocess.run(
            [os.environ["TERNCTL_PATH"], "generate", "--socket", self.sock, "--json",
             "--tokens", ",".join(map(str, PROMPT)), "-n", "6"],
            check=True, capture_output=True, text=True).stdout
        lines = [json.loads(line) for line in out.splitlines()]
        cli_tokens = [t for line in lines[:-1] for t in line["tokens"]]
        summary = lines[-1]["summary"]
        self.assertEqual(summary["stop_reason"], "length", out)
        self.assertEqual(summary["generated_tokens"], 6)
        self.assertEqual(len(cli_tokens), 6)
        self.assertTrue(all(0 <= t < 128256 for t in cli_tokens))
        print(f"2B4T: {summary['prompt_tokens_per_s']:.1f} prompt tokens/s, "
              f"{summary['tokens_per_s']:.1f} tokens/s (2 threads, this machine)",
              file=sys.stderr)

        # The Python clients give the same greedy tokens; a text prompt goes
        # through the model's 128256-token tokenizer.
        with Client(self.sock) as c:
            g = c.generate(tokens=PROMPT, max_tokens=6)
            self.assertEqual([ch.token for ch in g if ch.token is not None], cli_tokens)
            text, s = c.generate_text("The robot arm picks up", max_tokens=4)
            self.assertEqual(s.generated_tokens, 4)
            self.assertGreater(s.prompt_tokens, 1)

        async def main():
            async with await AsyncClient.connect(self.sock) as c:
                g = await c.generate(tokens=PROMPT, max_tokens=6, timeout=120)
                return [ch.token async for ch in g if ch.token is not None]
        self.assertEqual(asyncio.run(main()), cli_tokens)


if __name__ == "__main__":
    unittest.main()
