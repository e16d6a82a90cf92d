"""Generate with python/ternd_client against the real daemon serving a
language model: a random-weight BitNet b1.58 model written at test time by
python/ternd/gguf_writer.py and converted by `ternctl convert`.

Environment (set by tests/daemon/CMakeLists.txt): TERND_PATH (daemon),
TERNCTL_PATH (`ternctl convert`, and `ternctl generate --json`, the
cross-check), GGUF_WRITER_PATH.
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

from ternd_client import AsyncClient, Chunk, Client, TerndError

from test_ternd_client import doc_blocks, run_doc_blocks

# Long enough that a generation is still running when a cancel arrives
# (test_break_cancels_and_the_connection_stays_usable): greedy from [1, 2],
# the model of seed 11 runs to the end of its context without an
# end-of-generation token (seed 7's ended after 226 tokens, 5 ms here, so a
# cancel from a loaded machine could arrive after it); the test checks it.
CONTEXT = 4000
PROMPT = [5, 6, 7]


class GenerateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="ternd-py-generate-")
        gguf = os.path.join(cls.dir, "m.gguf")
        cls.model = os.path.join(cls.dir, "m.tern")
        subprocess.run([sys.executable, os.environ["GGUF_WRITER_PATH"],
                        "--arch", "bitnet-b1.58", "--hidden", "128", "--ffn", "256",
                        "--layers", "2", "--heads", "4", "--kv-heads", "2",
                        "--vocab", "600", "--seed", "11", "-o", gguf],
                       check=True, capture_output=True)
        subprocess.run([os.environ["TERNCTL_PATH"], "convert", gguf, "-o", cls.model],
                       check=True, capture_output=True)
        cls.sock = os.path.join(cls.dir, "t.sock")
        config = os.path.join(cls.dir, "ternd.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nsocket = "{cls.sock}"\n'
                    f'[runtime]\nmodel = "{cls.model}"\narena_mb = 32\n'
                    f'[llm]\nthreads = 2\nsequences = 2\nmax_context = {CONTEXT}\n')
        cls.log = open(os.path.join(cls.dir, "ternd.log"), "w")
        cls.proc = subprocess.Popen([os.environ["TERND_PATH"], "--config", config],
                                    stderr=cls.log)
        for _ in range(1000):
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

    def ternctl_generate(self, tokens, max_tokens):
        """`ternctl generate --json`: its tokens, text and summary."""
        out = subprocess.run(
            [os.environ["TERNCTL_PATH"], "generate", "--socket", self.sock, "--json",
             "--tokens", ",".join(map(str, tokens)), "-n", str(max_tokens)],
            check=True, capture_output=True, text=True).stdout
        lines = [json.loads(line) for line in out.splitlines()]
        return ([t for line in lines[:-1] for t in line["tokens"]],
                "".join(line["text"] for line in lines[:-1]), lines[-1]["summary"])

    def test_greedy_matches_ternctl_generate(self):
        want_tokens, want_text, want_summary = self.ternctl_generate(PROMPT, 12)
        self.assertEqual(len(want_tokens), 12)
        with Client(self.sock) as c:
            g = c.generate(tokens=PROMPT, max_tokens=12, logprobs=True)
            self.assertIsNone(g.summary)
            chunks = list(g)
        self.assertTrue(all(isinstance(ch, Chunk) for ch in chunks))
        self.assertEqual([ch.token for ch in chunks if ch.token is not None], want_tokens)
        self.assertEqual(g.tokens, want_tokens)
        self.assertEqual("".join(ch.text for ch in chunks), want_text)
        self.assertEqual(g.text, want_text)
        self.assertTrue(all(ch.logprob is not None and ch.logprob <= 0
                            for ch in chunks if ch.token is not None))
        self.assertTrue(g.done)
        self.assertEqual(g.summary.stop_reason, want_summary["stop_reason"])
        self.assertEqual(g.stop_reason, "length")
        self.assertEqual(g.summary.prompt_tokens, 3)
        self.assertEqual(g.summary.generated_tokens, 12)
        self.assertEqual(g.summary.model, want_summary["model"])

        # The text prompt: the daemon tokenizes it; greedy again, so the
        # blocking and the asyncio client agree.
        with Client(self.sock) as c:
            text, summary = c.generate_text("The robot", max_tokens=10)
        self.assertEqual(summary.generated_tokens, 10)

        async def main():
            async with await AsyncClient.connect(self.sock) as c:
                g = await c.generate(tokens=PROMPT, max_tokens=12)
                got = [ch async for ch in g]
                return got, g, await c.generate_text("The robot", max_tokens=10)
        achunks, ag, (atext, asummary) = asyncio.run(main())
        self.assertEqual(ag.tokens, want_tokens)
        self.assertEqual("".join(ch.text for ch in achunks), want_text)
        self.assertEqual(ag.summary.stop_reason, "length")
        self.assertEqual((atext, asummary.generated_tokens), (text, 10))

    def test_sessions_reuse_the_conversation_so_far(self):
        with Client(self.sock) as c:
            first = c.generate(tokens=PROMPT, max_tokens=6, session="py-chat")
            answer = [ch.token for ch in first if ch.token is not None]
            self.assertEqual(first.summary.reused_tokens, 0)
            turn = PROMPT + answer + [9, 10]
            again = c.generate(tokens=turn, max_tokens=6, session="py-chat")
            got = [ch.token for ch in again if ch.token is not None]
            self.assertEqual(again.summary.reused_tokens, len(PROMPT) + len(answer) - 1)
            fresh = [ch.token for ch in c.generate(tokens=turn, max_tokens=6)]
            self.assertEqual(got, fresh)
            self.assertGreaterEqual(c.stats().sessions, 1)
            self.assertGreaterEqual(c.stats().session_reused_tokens, 8)

        async def main():
            async with await AsyncClient.connect(self.sock) as c:
                g = await c.generate(tokens=turn, max_tokens=6, session="py-chat")
                tokens = [ch.token async for ch in g]
                return tokens, g.summary.reused_tokens
        tokens, reused = asyncio.run(main())
        self.assertEqual(tokens, fresh)
        self.assertEqual(reused, len(turn) - 1)

    def test_seeded_sampling_is_reproducible(self):
        options = dict(tokens=PROMPT, max_tokens=16, temperature=1.5, top_k=-1)
        with Client(self.sock) as c:
            a = c.generate(seed=11, **options)
            a_tokens = [ch.token for ch in a]
            b = c.generate(seed=11, **options)
            self.assertEqual([ch.token for ch in b], a_tokens)
            other_tokens = [ch.token for ch in c.generate(seed=12, **options)]
        self.assertEqual(len(a_tokens), 16)
        self.assertNotEqual(other_tokens, a_tokens)

        async def main():
            async with await AsyncClient.connect(self.sock) as c:
                g = await c.generate(seed=11, **options)
                return [ch.token async for ch in g]
        self.assertEqual(asyncio.run(main()), a_tokens)

    def test_stop_strings_and_stop_tokens(self):
        with Client(self.sock) as c:
            full = c.generate(tokens=PROMPT, max_tokens=12)
            list(full)
            self.assertGreaterEqual(len(full.text), 8, full.text)
            at = len(full.text) // 2
            while at + 3 < len(full.text) and not full.text[at:at + 3].isascii():
                at += 1
            stop = full.text[at:at + 3]
            text, summary = c.generate_text(tokens=PROMPT, max_tokens=12,
                                            stop=["\x00never", stop])
            self.assertEqual(summary.stop_reason, "stop")
            self.assertEqual(text, full.text[:full.text.find(stop)])
            # A single string is one stop string, not its characters.
            self.assertEqual(c.generate_text(tokens=PROMPT, max_tokens=12, stop=stop)[0],
                             text)
            # A stop token ends the stream before it.
            cut = full.tokens.index(full.tokens[6])
            g = c.generate(tokens=PROMPT, max_tokens=12, stop_tokens=[full.tokens[6]])
            self.assertEqual([ch.token for ch in g], full.tokens[:cut])
            self.assertEqual(g.summary.stop_reason, "stop")

    def test_break_cancels_and_the_connection_stays_usable(self):
        with Client(self.sock) as c:
            # Left alone, the generations below would not end before the
            # cancel: no end-of-generation token within the context.
            _, left_alone = c.generate_text(tokens=[1, 2], max_tokens=CONTEXT)
            self.assertIn(left_alone.stop_reason, ("length", "context"))
            g = c.generate(tokens=[1, 2], max_tokens=CONTEXT)
            for i, chunk in enumerate(g):
                if i == 2:
                    break
            self.assertTrue(g.done)
            self.assertEqual(g.summary.stop_reason, "cancelled")
            self.assertEqual(len(g.tokens), 3)
            self.assertLess(g.summary.generated_tokens, CONTEXT // 2)
            # The same connection serves the next calls.
            text, summary = c.generate_text(tokens=PROMPT, max_tokens=4)
            self.assertEqual(summary.stop_reason, "length")
            self.assertTrue(c.health().ready)

            # cancel() after a first chunk; with: closes on exit.
            g = c.generate(tokens=[1, 2], max_tokens=CONTEXT)
            self.assertIsInstance(next(g), Chunk)
            g.cancel()
            self.assertEqual(g.stop_reason, "cancelled")
            with c.generate(tokens=[1, 2], max_tokens=CONTEXT) as g:
                next(g)
            self.assertEqual(g.stop_reason, "cancelled")
            # A call while a generation streams cancels it first.
            g = c.generate(tokens=[1, 2], max_tokens=CONTEXT)
            next(g)
            self.assertTrue(c.health().ready)
            self.assertEqual(g.stop_reason, "cancelled")
            self.assertEqual(list(g), [])
            self.assertEqual(c.generate_text(tokens=PROMPT, max_tokens=4)[0], text)

        async def main():
            async with await AsyncClient.connect(self.sock) as c:
                g = await c.generate(tokens=[1, 2], max_tokens=CONTEXT)
                async with g:  # cancels on exit
                    n = 0
                    async for _ in g:
                        n += 1
                        if n == 3:
                            break
                first = g.stop_reason
                # Two cancels at once (say, `async with` and a finalized loop).
                g3 = await c.generate(tokens=[1, 2], max_tokens=CONTEXT)
                await g3.__anext__()
                await asyncio.wait_for(asyncio.gather(g3.cancel(), g3.cancel()), 10)
                assert g3.stop_reason == "cancelled", g3
                g2 = await c.generate(tokens=[1, 2], max_tokens=CONTEXT)
                async for _ in g2:
                    break  # the loop finalizes the iterator: cancelled soon
                for _ in range(500):
                    if g2.done:
                        break
                    await asyncio.sleep(0.01)
                return first, g2.stop_reason, await c.generate_text(tokens=PROMPT,
                                                                    max_tokens=4)
        first, second, (atext, asummary) = asyncio.run(main())
        self.assertEqual((first, second), ("cancelled", "cancelled"))
        self.assertEqual(atext, text)

    def test_errors_raise_with_the_daemons_message(self):
        with Client(self.sock) as c:
            with self.assertRaises(TerndError) as e:
                list(c.generate("x", tokens=[1], max_tokens=4))
            self.assertEqual(e.exception.code_name, "INVALID_ARGUMENT")
            self.assertIn("exactly one of prompt", e.exception.message)
            with self.assertRaises(TerndError) as e:
                c.generate_text(tokens=[1, 600], max_tokens=4)
            self.assertEqual(e.exception.code, 3)
            self.assertIn("prompt_tokens[1] is 600, outside the vocabulary 0..599",
                          e.exception.message)
            with self.assertRaises(TerndError) as e:
                c.generate_text("x", max_tokens=4, temperature=-1)
            self.assertIn("temperature", e.exception.message)
            with self.assertRaises(TerndError) as e:
                c.infer({"x": [0.0] * 16})
            self.assertEqual(e.exception.code_name, "FAILED_PRECONDITION")
            self.assertIn("is a language model", e.exception.message)
            self.assertEqual(c.generate_text(tokens=[1, 2], max_tokens=3)[1].generated_tokens, 3)

        async def main():
            async with await AsyncClient.connect(self.sock) as c:
                with self.assertRaises(TerndError) as e:
                    await c.generate_text("x", tokens=[1], max_tokens=4)
                self.assertIn("exactly one of prompt", e.exception.message)
                with self.assertRaises(TerndError) as e:
                    g = await c.generate(tokens=[600], max_tokens=4)
                    async for _ in g:
                        pass
                self.assertIn("outside the vocabulary", e.exception.message)
                return await c.generate_text(tokens=[1, 2], max_tokens=3)
        self.assertEqual(asyncio.run(main())[1].generated_tokens, 3)

    def test_model_info_describes_the_language_model(self):
        with Client(self.sock) as c:
            lm = c.model_info().language_model
        self.assertEqual(lm.architecture, "bitnet-b1.58")
        self.assertEqual((lm.layers, lm.embedding, lm.vocab), (2, 128, 600))
        self.assertEqual((lm.context, lm.sequences, lm.threads), (CONTEXT, 2, 2))
        self.assertEqual(lm.tokenizer, "gpt2 llama-bpe")
        self.assertGreater(lm.kv_cache_bytes, 0)

    def test_async_two_generations_at_once(self):
        with Client(self.sock) as c:
            alone = [c.generate_text(tokens=p, max_tokens=20) for p in ([1, 2], [3, 4])]

        async def main():
            c1 = await AsyncClient.connect(self.sock)
            c2 = await AsyncClient.connect(self.sock)
            try:
                both = await asyncio.gather(c1.generate_text(tokens=[1, 2], max_tokens=20),
                                            c2.generate_text(tokens=[3, 4], max_tokens=20))
                # Two at once on one connection too, with a call between.
                g1 = await c1.generate(tokens=[1, 2], max_tokens=20)
                g2 = await c1.generate(tokens=[3, 4], max_tokens=20)
                health = await c1.health()
                t1 = [ch.text async for ch in g1]
                t2 = [ch.text async for ch in g2]
                return both, ("".join(t1), "".join(t2)), health
            finally:
                await c1.close()
                await c2.close()
        both, one_connection, health = asyncio.run(main())
        self.assertTrue(health.ready)
        self.assertEqual([t for t, _ in both], [t for t, _ in alone])
        self.assertEqual([s.stop_reason for _, s in both], ["length", "length"])
        self.assertEqual(list(one_connection), [t for t, _ in alone])

    def test_python_client_doc_examples_run(self):
        """docs/python-client.md, section Generate: every block runs as written."""
        blocks = doc_blocks(language_model=True)
        self.assertGreaterEqual(len(blocks), 4)
        run_doc_blocks(self, self.sock, blocks)


if __name__ == "__main__":
    unittest.main()
