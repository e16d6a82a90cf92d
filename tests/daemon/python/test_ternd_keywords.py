"""The keyword spotter (models/keywords.tern) served by the real ternd:
NumPy int16 and float32 inputs through the Python client, the sample rate
in ModelInfo, and the streaming example
(python/ternd_client/examples/stream_keywords.py) on a WAV of known spoken
words.

Environment (tests/daemon/CMakeLists.txt): TERND_PATH, TERNCTL_PATH.
The spoken words are synthesised with espeak-ng (models/make_keywords_data.py)
in voices of the test split, which the model never heard in training.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import wave

import numpy as np

from ternd_client import Client, TerndError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MODEL = os.path.join(ROOT, "models", "keywords.tern")
EXAMPLE = os.path.join(ROOT, "python", "ternd_client", "examples", "stream_keywords.py")
sys.path.insert(0, os.path.join(ROOT, "models"))

import make_keywords_data as mk  # noqa: E402

# (voice of the test split, word, start in seconds) of the streamed WAV.
SPOKEN = (("en-us+Alex", "three", 0.6), ("en-gb+m7", "seven", 2.1), ("en-us+f4", "one", 3.7))
STREAM_SECONDS = 5.0


def spoken_wav(path: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal(int(STREAM_SECONDS * 16000)) * 30.0  # a quiet room
    for voice, word, start in SPOKEN:
        s = mk.speak(voice, word, 150, 50)
        s *= 12000.0 / np.abs(s).max()
        i = int(start * 16000)
        x[i:i + len(s)] += s
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(mk.to_int16(x).astype("<i2").tobytes())


@unittest.skipUnless(shutil.which("espeak-ng"), "espeak-ng is not installed (scripts/deps.sh)")
class KeywordsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="ternd-kw-")
        cls.sock = os.path.join(cls.dir, "t.sock")
        config = os.path.join(cls.dir, "ternd.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nsocket = "{cls.sock}"\n'
                    f'[runtime]\nmodel = "{MODEL}"\nworkers = 1\n')
        cls.log = open(os.path.join(cls.dir, "ternd.log"), "w")
        cls.proc = subprocess.Popen([os.environ["TERND_PATH"], "--config", config],
                                    stderr=cls.log)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with Client(cls.sock, timeout=5) as c:
                        c.health()
                    break
                except TerndError:  # not listening yet
                    if time.monotonic() > deadline or cls.proc.poll() is not None:
                        raise AssertionError("ternd did not answer within 20 s; see "
                                             f"{cls.log.name}")
                    time.sleep(0.02)
            cls.wav = os.path.join(cls.dir, "spoken.wav")
            spoken_wav(cls.wav)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.proc.send_signal(signal.SIGTERM)
        code = cls.proc.wait(10)
        cls.log.close()
        shutil.rmtree(cls.dir)
        assert code == 0, f"ternd exited with {code}"

    def test_model_info_gives_the_audio_input(self):
        with Client(self.sock) as c:
            info = c.model_info()
        self.assertEqual(info.name, "keywords")
        self.assertEqual([(i.name, i.features, i.sample_rate) for i in info.inputs],
                         [("audio", 16000, 16000)])
        self.assertEqual(info.outputs[0].sample_rate, 0)

    def test_numpy_int16_and_float32_give_the_runtime_outputs(self):
        with wave.open(self.wav) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        x16 = np.stack([pcm[8000:24000], pcm[32000:48000]])  # "three", "seven"
        with Client(self.sock) as c:
            a = c.infer({"audio": x16})
            b = c.infer({"audio": x16.astype(np.float32)})
            one = c.infer({"audio": x16[1]})  # a 1-D array is one row
        np.testing.assert_array_equal(a["probs"].numpy(), b["probs"].numpy())
        np.testing.assert_array_equal(one["probs"].numpy()[0], a["probs"].numpy()[1])
        ran = subprocess.run(
            [os.environ["TERNCTL_PATH"], "run", MODEL, "--json", "--values"]
            + [str(int(v)) for v in x16.reshape(-1)],
            check=True, capture_output=True, text=True).stdout
        want = json.loads(ran)["outputs"]
        np.testing.assert_allclose(a["probs"].numpy(), want["probs"], rtol=1e-5, atol=1e-6)
        self.assertEqual(a["class"].numpy()[:, 0].tolist(), [3, 7])

    def test_numpy_arrays_of_other_kinds_are_refused(self):
        with Client(self.sock) as c:
            with self.assertRaisesRegex(TypeError, "complex"):
                c.infer({"audio": np.zeros((1, 16000), dtype=np.complex64)})
            with self.assertRaisesRegex(ValueError, r"shape \(1, 2, 8000\)"):
                c.infer({"audio": np.zeros((1, 2, 8000), dtype=np.int16)})

    def test_streaming_example_prints_the_spoken_words(self):
        out = subprocess.run([sys.executable, EXAMPLE, self.wav, "--socket", self.sock],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = [line.split() for line in out.stdout.splitlines()]
        self.assertEqual([words[2] for words in lines], [w for _, w, _ in SPOKEN], out.stdout)
        for words, (_, _, start) in zip(lines, SPOKEN):
            t, conf = float(words[0]), float(words[3])
            # The best window holds the word: it starts at most 1 s before it.
            self.assertTrue(start - 1.0 <= t <= start, out.stdout)
            self.assertGreaterEqual(conf, 0.7)


if __name__ == "__main__":
    unittest.main()
