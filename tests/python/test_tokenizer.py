"""The reference tokenizer and trainer (python/ternd/tokenizer.py): the
byte map, the pre-tokenizer splits, the merge loops, invalid UTF-8, special
tokens, training, and the GGUF keys written and read back. The C++
tokenizer is compared with this reference by tests/unit/tokenizer_test.cc."""

import os
import tempfile

import pytest

from ternd import gguf_writer
from ternd import tokenizer as T


@pytest.fixture(scope="module")
def corpus():
    return T.generate_corpus(seed=3, sentences=400)


@pytest.fixture(scope="module")
def bpe(corpus):
    v = T.train_bpe(corpus, 300)
    return T.Vocab("gpt2", [t.encode() for t in v["tokens"]], v["types"],
                   merges=[m.encode() for m in v["merges"]], pre=v["pre"],
                   bos=v["bos"], eos=v["eos"], add_bos=True)


@pytest.fixture(scope="module")
def spm(corpus):
    v = T.train_spm(corpus, 300)
    return T.Vocab("llama", [t.encode() for t in v["tokens"]], v["types"],
                   scores=v["scores"], bos=1, eos=2, unk=0)


def test_byte_map_is_gpt2s():
    m = T.bytes_to_unicode()
    assert len(set(m.values())) == 256
    assert m[ord("A")] == "A" and m[ord(" ")] == "\u0120" and m[10] == "\u010a"
    assert all(c.isprintable() for c in m.values())
    assert T.byte_decode(T.byte_encode(bytes(range(256)))) == bytes(range(256))


def test_utf8_sanitizing_is_per_byte():
    r = "\ufffd"
    assert T.sanitize_utf8("héllo 😀".encode()) == "héllo 😀"
    assert T.sanitize_utf8(b"\xff") == r
    assert T.sanitize_utf8(b"\xe2\x82A") == r + r + "A"
    assert T.sanitize_utf8(b"\xc0\xaf") == r + r  # overlong
    assert T.sanitize_utf8(b"\xed\xa0\x80") == r * 3  # surrogate
    assert T.sanitize_utf8(b"\xf4\x90\x80\x80") == r * 4  # > U+10FFFF


def test_llama3_and_gpt2_splits(bpe):
    s = "Hello world 12345 it's  x\n\n  y"
    assert bpe.split(s) == ["Hello", " world", " ", "123", "45", " it", "'s",
                            " ", " x", "\n\n", " ", " y"]
    gpt2 = T.Vocab("gpt2", bpe.tokens, bpe.types, merges=[], pre="gpt-2")
    assert gpt2.split(s) == ["Hello", " world", " 12345", " it", "'s", " ",
                             " x", "\n\n ", " y"]
    assert bpe.split("IT'S") == ["IT", "'S"]
    assert gpt2.split("IT'S") == ["IT", "'", "S"]


def test_unknown_pre_tokenizer_is_refused(bpe):
    with pytest.raises(ValueError, match="unsupported pre-tokenizer 'qwen2'"):
        T.Vocab("gpt2", bpe.tokens, bpe.types, merges=[], pre="qwen2")


def test_train_merges_by_hand():
    # "aa" occurs 2 * 5 times, "ab" 5 + 3 times.
    merges = T.train_merges({("a", "a", "a", "b"): 5, ("a", "b"): 3}, 3)
    assert merges[0] == ("a", "a")
    assert len(merges) == 3


@pytest.mark.parametrize("text", [
    "", "Hello world", "  spaces   and\ttabs\n\n", "it's 1234567890",
    "über 你好 😀👨‍👩‍👧", "def f(x):\n    return x\n", "<|eot_id|> x",
])
def test_round_trips(bpe, spm, text):
    b = text.encode()
    for v in (bpe, spm):
        for add_bos in (False, True):
            assert v.decode(v.encode(b, add_bos)) == b


def test_invalid_utf8(bpe, spm):
    # gpt2 reads such bytes as U+FFFD; llama keeps them (byte fallback).
    assert bpe.decode(bpe.encode(b"a\xffb")) == "a\ufffdb".encode()
    assert spm.decode(spm.encode(b"a\xff b")) == b"a\xff b"


def test_special_tokens(bpe):
    eot = bpe.ids[b"<|eot_id|>"]
    assert bpe.encode(b"<|eot_id|>", parse_special=True) == [eot]
    plain = bpe.encode(b"<|eot_id|>")
    assert eot not in plain and len(plain) > 1
    user = bpe.ids[b"[[ternd-user]]"]
    assert bpe.encode(b"x[[ternd-user]]") [-1] == user
    assert bpe.encode(b"a", add_bos=True)[0] == bpe.bos
    assert bpe.decode([eot]) == b"" and bpe.decode([eot], True) == b"<|eot_id|>"


def test_ignore_merges(bpe):
    word = T.byte_encode(b" zzzqqqxxyyz").encode()
    assert bpe.encode(b" zzzqqqxxyyz") == [bpe.ids[word]]


def test_spm_byte_fallback(spm):
    ids = spm.encode("☃".encode())  # not in the corpus
    assert ids[-3:] == [spm.ids[b"<0xE2>"], spm.ids[b"<0x98>"],
                        spm.ids[b"<0x83>"]]
    assert spm.decode(ids) == "☃".encode()


def test_gguf_keys_round_trip(corpus):
    v = T.train_bpe(corpus, 50)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "v.gguf")
        T.write_vocab_gguf(v, path)
        meta = T.read_gguf_metadata(path)
        assert meta["tokenizer.ggml.model"] == b"gpt2"
        assert meta["tokenizer.ggml.pre"] == b"llama-bpe"
        assert len(meta["tokenizer.ggml.merges"]) == 50
        assert meta["tokenizer.ggml.bos_token_id"] == v["bos"]
        assert meta["tokenizer.ggml.add_bos_token"] is True
        assert "tokenizer.ggml.scores" not in meta
        r = T.Vocab.from_gguf(path)
        assert r.tokens == [t.encode() for t in v["tokens"]]
        assert r.add_bos and r.eos == v["eos"]


def test_add_tokenizer_metadata_leaves_out_none():
    w = gguf_writer.GGUFWriter()
    gguf_writer.add_tokenizer_metadata(w, "llama", ["<unk>", "a"], [2, 1],
                                       scores=[0.0, -1.0], unk=0)
    keys = [k for k, _, _ in w.kv]
    assert keys == ["tokenizer.ggml.model", "tokenizer.ggml.tokens",
                    "tokenizer.ggml.token_type", "tokenizer.ggml.scores",
                    "tokenizer.ggml.unknown_token_id"]
