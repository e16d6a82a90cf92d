"""The reference tokenizer of ternd's language models, and a small trainer
that makes vocabularies to test the C++ tokenizer (runtime/tokenizer/) with.

Written independently of the C++ code and as plainly as possible, so that
the two can be compared token for token:

  * ``gpt2`` vocabularies (byte-level BPE, as in llama-3 and Falcon3): the
    pre-tokenizer regex of ``tokenizer.ggml.pre`` run with the ``regex``
    module (Debian: python3-regex), GPT-2's byte-to-unicode mapping, and a
    merge loop that merges the lowest-ranked adjacent pair (the leftmost of
    equal ones) until none is left. With the llama-3 pre-tokenizers a word
    that is a token is taken whole ("ignore_merges").
  * ``llama`` vocabularies (SentencePiece BPE, as in LLaMA 1/2 and the
    1bitLLM bitnet_b1_58 models): spaces become U+2581, an optional space
    prefix, a loop that merges the adjacent pair whose concatenation is the
    token with the highest score, and byte fallback (<0xNN>) for what is
    left unknown.
  * Special tokens (control and unknown only when asked for, user-defined
    always) are split out of the text first, the longest first.
  * Invalid UTF-8 (gpt2 only): every byte that does not start a valid
    sequence is read as U+FFFD, as llama.cpp does.

Command line (no numpy or torch needed for ``encode``; ``train`` and
``fixtures`` write GGUF with gguf_writer.py, which needs numpy):

    python3 python/ternd/tokenizer.py fixtures --out DIR
    python3 python/ternd/tokenizer.py encode --vocab DIR/bpe.gguf \\
        --parse-special 1 --add-bos 0 < hex-lines > id-lines
    python3 python/ternd/tokenizer.py train --corpus FILE --merges 1500 \\
        -o vocab.gguf

``encode`` reads one input per line as hex (so any bytes can be given) and
prints the token ids of each on one line.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import struct
import sys

try:  # as the package module ternd.tokenizer, or as a script beside it
    from . import gguf_writer
except ImportError:  # pragma: no cover - run as a script
    import gguf_writer  # type: ignore

# GGUF token types.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Pre-tokenizer regexes, as llama.cpp runs them (its "adapted" llama-3
# form spells the case-insensitive contractions out).
LLAMA3_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
                r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_REGEX = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"
              r"| ?[^\s\p{L}\p{N}]+|\s+(?!\S)")
# tokenizer.ggml.pre -> (regex, ignore_merges, default add_bos)
PRE_TOKENIZERS = {
    "llama-bpe": (LLAMA3_REGEX, True, True),
    "llama3": (LLAMA3_REGEX, True, True),
    "llama-v3": (LLAMA3_REGEX, True, True),
    "falcon3": (LLAMA3_REGEX, True, True),
    "gpt-2": (GPT2_REGEX, False, False),
}

# The llama-3 special tokens the trained vocabularies carry (control).
LLAMA3_SPECIALS = (["<|begin_of_text|>", "<|end_of_text|>"] +
                   [f"<|reserved_special_token_{i}|>" for i in range(4)] +
                   ["<|start_header_id|>", "<|end_header_id|>",
                    "<|reserved_special_token_4|>", "<|eot_id|>"] +
                   [f"<|reserved_special_token_{i}|>" for i in range(5, 12)])
SPACE = "\u2581"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values to printable chars."""
    bs = (list(range(ord("!"), ord("~") + 1)) +
          list(range(ord("\xa1"), ord("\xac") + 1)) +
          list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def byte_encode(b: bytes) -> str:
    return "".join(BYTE_TO_CHAR[x] for x in b)


def byte_decode(s: str) -> bytes:
    return bytes(CHAR_TO_BYTE[c] for c in s)


def utf8_sequence(b: bytes, i: int) -> int:
    """The length of the valid UTF-8 sequence at b[i], or 0 if the bytes
    there are not one (stray continuation bytes, truncated sequences,
    overlong forms, surrogates, values above U+10FFFF)."""
    lead = b[i]
    n = 1 if lead < 0x80 else 2 if 0xC2 <= lead <= 0xDF else \
        3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0
    try:
        return n if n and len(b[i:i + n].decode("utf-8")) == 1 else 0
    except UnicodeDecodeError:
        return 0


def sanitize_utf8(b: bytes) -> str:
    """Decodes `b`; every byte that does not start a valid UTF-8 sequence
    becomes one U+FFFD."""
    out = []
    i = 0
    while i < len(b):
        n = utf8_sequence(b, i)
        out.append(b[i:i + n].decode() if n else "\ufffd")
        i += n or 1
    return "".join(out)


# --- GGUF metadata (the tokenizer keys) ------------------------------------

def read_gguf_metadata(path: str) -> dict:
    """The metadata of a GGUF file as a dict (arrays as lists, strings as
    bytes so that any token survives). Tensors are not read."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    version, _n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version}")
    pos = 24
    scalar = gguf_writer._SCALAR

    def string(p):
        (n,) = struct.unpack_from("<Q", data, p)
        return data[p + 8:p + 8 + n], p + 8 + n

    def value(vtype, p):
        if vtype == gguf_writer.STRING:
            return string(p)
        if vtype == gguf_writer.ARRAY:
            etype, count = struct.unpack_from("<IQ", data, p)
            p += 12
            items = []
            for _ in range(count):
                v, p = value(etype, p)
                items.append(v)
            return items, p
        fmt = scalar[vtype]
        return struct.unpack_from(fmt, data, p)[0], p + struct.calcsize(fmt)

    meta = {}
    for _ in range(n_kv):
        key, pos = string(pos)
        (vtype,) = struct.unpack_from("<I", data, pos)
        meta[key.decode()], pos = value(vtype, pos + 4)
    return meta


class Vocab:
    """What the tokenizer.ggml.* keys say, in plain Python."""

    def __init__(self, model: str, tokens: list[bytes], types: list[int],
                 scores: list[float] | None = None,
                 merges: list[bytes] | None = None, pre: str = "",
                 bos: int = -1, eos: int = -1, unk: int = -1,
                 add_bos: bool | None = None, add_space_prefix: bool = True):
        self.model = model
        self.tokens = tokens
        self.types = types
        self.scores = scores or [0.0] * len(tokens)
        self.pre = pre
        self.bos, self.eos, self.unk = bos, eos, unk
        self.add_space_prefix = add_space_prefix
        self.ids = {t: i for i, t in enumerate(tokens)}  # the last one wins
        self.ranks: dict[tuple[str, str], int] = {}
        self.ignore_merges = False
        default_add_bos = model == "llama"
        if model == "gpt2":
            if pre not in PRE_TOKENIZERS:
                raise ValueError(f"unsupported pre-tokenizer {pre!r}")
            self.regex, self.ignore_merges, default_add_bos = PRE_TOKENIZERS[pre]
            for rank, m in enumerate(merges or []):
                s = m.decode()
                k = s.find(" ", 1)  # as llama.cpp splits "a b"
                if k < 0:
                    raise ValueError(f"merge {rank} {s!r} has no space")
                self.ranks.setdefault((s[:k], s[k + 1:]), rank)
        self.add_bos = default_add_bos if add_bos is None else add_bos

    @classmethod
    def from_gguf(cls, path: str) -> "Vocab":
        m = read_gguf_metadata(path)
        k = "tokenizer.ggml."
        get = lambda key, default=None: m.get(k + key, default)  # noqa: E731
        tokens = get("tokens")
        return cls(get("model").decode(), tokens,
                   get("token_type", [NORMAL] * len(tokens)),
                   get("scores"), get("merges"), (get("pre") or b"").decode(),
                   get("bos_token_id", -1), get("eos_token_id", -1),
                   get("unknown_token_id", -1), get("add_bos_token"),
                   get("add_space_prefix", True))

    # --- encoding ---------------------------------------------------------

    def special_fragments(self, text: bytes, parse_special: bool) -> list:
        """llama.cpp's partition: each special token, the longest first
        (then by id), is cut out of every text fragment left to right."""
        kinds = (CONTROL, UNKNOWN, USER_DEFINED) if parse_special else \
            (USER_DEFINED,)
        specials = sorted((i for i, t in enumerate(self.types)
                           if t in kinds and self.tokens[i]),
                          key=lambda i: (-len(self.tokens[i]), i))
        frags: list = [text] if text else []
        for sid in specials:
            t = self.tokens[sid]
            out = []
            for f in frags:
                if isinstance(f, int):
                    out.append(f)
                    continue
                pos = 0
                while (k := f.find(t, pos)) >= 0:
                    if k > pos:
                        out.append(f[pos:k])
                    out.append(sid)
                    pos = k + len(t)
                if pos < len(f):
                    out.append(f[pos:])
            frags = out
        return frags

    def encode(self, text: bytes, add_bos: bool = False,
               parse_special: bool = False) -> list[int]:
        out = [self.bos] if add_bos else []
        prev_special = True
        for f in self.special_fragments(text, parse_special):
            if isinstance(f, int):
                out.append(f)
                prev_special = True
            elif self.model == "gpt2":
                out += self.encode_bpe(f)
            else:
                if self.add_space_prefix and prev_special:
                    f = b" " + f
                out += self.encode_spm(f.replace(b" ", SPACE.encode()))
                prev_special = False
        return out

    def split(self, text: str) -> list[str]:
        """The pre-tokenizer: the regex's matches and what lies between."""
        import regex
        pieces = []
        end = 0
        for m in regex.finditer(self.regex, text):
            if m.start() > end:
                pieces.append(text[end:m.start()])
            pieces.append(m.group())
            end = m.end()
        if end < len(text):
            pieces.append(text[end:])
        return pieces

    def encode_bpe(self, text: bytes) -> list[int]:
        out = []
        for word in self.split(sanitize_utf8(text)):
            w = byte_encode(word.encode())
            if self.ignore_merges and w.encode() in self.ids:
                out.append(self.ids[w.encode()])
                continue
            syms = list(w)
            while len(syms) > 1:
                best = None
                for j in range(len(syms) - 1):
                    r = self.ranks.get((syms[j], syms[j + 1]))
                    if r is not None and (best is None or r < best[0]):
                        best = (r, j)
                if best is None:
                    break
                j = best[1]
                syms[j:j + 2] = [syms[j] + syms[j + 1]]
            out += [self.ids[s.encode()] for s in syms]
        return out

    def byte_token(self, b: int) -> int:
        t = self.ids.get(f"<0x{b:02X}>".encode())
        if t is None:
            t = self.ids.get(bytes([b]), self.unk)
        return t

    def encode_spm(self, text: bytes) -> list[int]:
        # Symbols: the UTF-8 characters, and each byte of invalid UTF-8 on
        # its own. (llama.cpp takes as many bytes as a lead byte announces
        # without checking them, so "\xff " would swallow the space.)
        syms = []
        i = 0
        while i < len(text):
            n = utf8_sequence(text, i) or 1
            syms.append(text[i:i + n])
            i += n
        while True:
            best = None
            for j in range(len(syms) - 1):
                t = self.ids.get(syms[j] + syms[j + 1])
                if t is not None and (best is None or self.scores[t] > best[0]):
                    best = (self.scores[t], j)
            if best is None:
                break
            j = best[1]
            syms[j:j + 2] = [syms[j] + syms[j + 1]]
        out = []
        for s in syms:
            if s in self.ids:
                out.append(self.ids[s])
            else:
                out += [self.byte_token(b) for b in s]
        return out

    # --- decoding ---------------------------------------------------------

    def piece(self, tid: int, special: bool = False) -> bytes:
        t, kind = self.tokens[tid], self.types[tid]
        if kind == USER_DEFINED or (special and kind in (CONTROL, UNKNOWN)):
            return t
        if kind == NORMAL:
            if self.model == "gpt2":
                return byte_decode(t.decode())
            return t.replace(SPACE.encode(), b" ")
        if kind == BYTE and self.model == "llama":
            return bytes([int(t[3:5], 16)])
        return b""

    def decode(self, ids: list[int], special: bool = False) -> bytes:
        """The pieces joined; for llama vocabularies with a space prefix,
        without the leading space of the first token after a leading BOS."""
        pieces = [self.piece(i, special) for i in ids]
        if self.model == "llama" and self.add_space_prefix:
            k = 1 if ids and ids[0] == self.bos else 0
            if k < len(pieces) and pieces[k].startswith(b" "):
                pieces[k] = pieces[k][1:]
        return b"".join(pieces)


# --- training ----------------------------------------------------------------

WORDS = {
    "en": "the quick brown fox jumps over lazy dog model token weight ternary "
          "network device fleet update inference kernel memory request "
          "answer question language people world small large fast slow "
          "water light house time year day way thing man woman child "
          "work life hand part place case week company system program "
          "number group problem fact it's don't we're they've I'm you'll "
          "she'd can't won't isn't".split(),
    "de": "über schön größer Straße Mädchen müssen können Brücke Käse "
          "Gemütlichkeit Fußgänger Übersetzung Wörterbuch".split(),
    "fr": "déjà vu être où çà garçon noël élève français côté fenêtre "
          "l'homme aujourd'hui".split(),
    "es": "niño año mañana señor corazón canción España pingüino".split(),
    "ru": "привет мир язык модель сеть память Москва быстро медленно "
          "хорошо".split(),
    "el": "γειά σου κόσμε γλώσσα μοντέλο Αθήνα".split(),
    "zh": "你好 世界 语言 模型 网络 内存 北京 上海 今天 天气".split(),
    "ja": "こんにちは 世界 言語 モデル 東京 ありがとう カタカナ".split(),
    "ko": "안녕하세요 세계 언어 모델 서울".split(),
    "ar": "مرحبا العالم لغة نموذج".split(),
    "hi": "नमस्ते दुनिया भाषा मॉडल".split(),
}
EMOJI = ["😀", "🎉", "👍", "🚀", "❤️", "👨‍👩‍👧‍👦", "🏳️‍🌈", "👍🏽", "🇩🇪", "✨"]
CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "if (a != b && c <= d) { return -1; }\n",
    "const std::string_view s = \"hello\";\n",
    "x = {'key': [1, 2, 3], \"other\": None}\n",
    "    // comment: TODO(ternd) fix this\n",
    "SELECT id, name FROM users WHERE age >= 18;\n",
    "<html><body class=\"main\">text</body></html>\n",
]


def generate_corpus(seed: int = 1, sentences: int = 6000,
                    repo_root: str | None = None) -> str:
    """Mixed-language sentences, numbers, code and emoji, made here (no
    download), plus the repository's docs/*.md when `repo_root` is given."""
    rng = random.Random(seed)
    langs = list(WORDS)
    out = []
    for _ in range(sentences):
        kind = rng.random()
        if kind < 0.1:
            out.append(rng.choice(CODE))
            continue
        lang = rng.choice(langs)
        words = [rng.choice(WORDS[lang]) for _ in range(rng.randint(3, 12))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words) + 1),
                         str(rng.randint(0, 10 ** rng.randint(1, 8))))
        if rng.random() < 0.15:
            words.append(rng.choice(EMOJI))
        if lang == "en" and rng.random() < 0.5:
            words[0] = words[0].capitalize()
        sep = "" if lang in ("zh", "ja") and rng.random() < 0.5 else " "
        end = rng.choice([".", "!", "?", "...", ",", ":", ""])
        ws = rng.choice(["\n", " ", "\n\n", "  ", "\t", "\r\n"])
        out.append(sep.join(words) + end + ws)
    if repo_root:
        docs = os.path.join(repo_root, "docs")
        for name in sorted(os.listdir(docs)) if os.path.isdir(docs) else []:
            if name.endswith(".md"):
                with open(os.path.join(docs, name), encoding="utf-8") as f:
                    out.append(f.read())
    return "".join(out)


def train_merges(words: dict[tuple[str, ...], int],
                 n_merges: int) -> list[tuple[str, str]]:
    """Classic BPE training on words given as symbol tuples with counts:
    repeatedly merges the most frequent adjacent pair (ties: the smallest
    pair), with incremental pair counts."""
    seqs = [list(w) for w in words]
    freq = list(words.values())
    counts: dict[tuple[str, str], int] = {}
    where: dict[tuple[str, str], set[int]] = {}
    for i, s in enumerate(seqs):
        for p in zip(s, s[1:]):
            counts[p] = counts.get(p, 0) + freq[i]
            where.setdefault(p, set()).add(i)
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        c, p = heapq.heappop(heap)
        if counts.get(p, 0) != -c or c == 0:
            continue
        merges.append(p)
        changed = set()
        for i in where.pop(p, ()):
            s = seqs[i]
            for q in zip(s, s[1:]):
                counts[q] -= freq[i]
                changed.add(q)
            j = 0
            new = []
            while j < len(s):
                if j + 1 < len(s) and (s[j], s[j + 1]) == p:
                    new.append(s[j] + s[j + 1])
                    j += 2
                else:
                    new.append(s[j])
                    j += 1
            seqs[i] = new
            for q in zip(new, new[1:]):
                counts[q] = counts.get(q, 0) + freq[i]
                where.setdefault(q, set()).add(i)
                changed.add(q)
        counts.pop(p, None)
        for q in changed:
            if counts.get(q, 0) > 0:
                heapq.heappush(heap, (-counts[q], q))
    return merges


def train_bpe(corpus: str, n_merges: int, pre: str = "llama-bpe") -> dict:
    """A byte-level BPE vocabulary in the llama-3 layout: the 256 byte
    chars, the merges' results, the llama-3 special tokens (control), one
    user-defined token, and one normal token that merges cannot reach (so
    that ignore_merges matters)."""
    import regex
    pattern = PRE_TOKENIZERS[pre][0]
    words: dict[tuple[str, ...], int] = {}
    for w in regex.findall(pattern, corpus):
        key = tuple(byte_encode(w.encode()))
        words[key] = words.get(key, 0) + 1
    merges = train_merges(words, n_merges)
    tokens = [BYTE_TO_CHAR[b] for b in range(256)]
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    unreachable = byte_encode(" zzzqqqxxyyz".encode())
    if unreachable not in seen:
        tokens.append(unreachable)
    types = [NORMAL] * len(tokens)
    tokens.append("[[ternd-user]]")
    types.append(USER_DEFINED)
    first_special = len(tokens)
    tokens += LLAMA3_SPECIALS
    types += [CONTROL] * len(LLAMA3_SPECIALS)
    return {
        "model": "gpt2", "pre": pre, "tokens": tokens, "types": types,
        "merges": [f"{a} {b}" for a, b in merges],
        "bos": first_special, "eos": first_special + 1,
        "eot": first_special + LLAMA3_SPECIALS.index("<|eot_id|>"),
        "add_bos": True,
    }


def train_spm(corpus: str, n_merges: int) -> dict:
    """A SentencePiece-style BPE vocabulary in the LLaMA layout: <unk>, <s>,
    </s>, the 256 byte tokens, the merges' results scored by merge order,
    then the single characters of the corpus."""
    words: dict[tuple[str, ...], int] = {}
    for w in corpus.replace("\r", " ").replace("\n", " ").split(" "):
        if w:
            key = tuple(SPACE + w)
            words[key] = words.get(key, 0) + 1
    merges = train_merges(words, n_merges)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    scores = [0.0] * len(tokens)
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
            types.append(NORMAL)
            scores.append(-float(len(tokens)))
    chars = sorted({c for w in words for c in w} - seen)
    for c in chars:
        tokens.append(c)
        types.append(NORMAL)
        scores.append(-float(len(tokens)))
    return {"model": "llama", "tokens": tokens, "types": types,
            "scores": scores, "bos": 1, "eos": 2, "unk": 0, "add_bos": True}


def write_vocab_gguf(v: dict, path: str, pre: str | None = None) -> None:
    w = gguf_writer.GGUFWriter()
    w.add("general.architecture", gguf_writer.STRING, "ternd-tokenizer-test")
    gguf_writer.add_tokenizer_metadata(
        w, v["model"], v["tokens"], v["types"], merges=v.get("merges"),
        scores=v.get("scores"), pre=pre or v.get("pre"), bos=v.get("bos"),
        eos=v.get("eos"), eot=v.get("eot"), unk=v.get("unk"),
        add_bos=v.get("add_bos"))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(w.to_bytes())
    os.replace(tmp, path)


FIXTURES = ("corpus.txt", "bpe.gguf", "bpe_gpt2.gguf", "spm.gguf")


def fixtures_up_to_date(out_dir: str, merges: int) -> bool:
    """Whether write_fixtures(out_dir, merges) already ran with this code."""
    here = os.path.dirname(os.path.abspath(__file__))
    sources = [os.path.join(here, f) for f in ("tokenizer.py", "gguf_writer.py")]
    try:
        with open(os.path.join(out_dir, "stamp")) as f:
            if f.read() != f"merges {merges}\n":
                return False
        oldest = min(os.path.getmtime(os.path.join(out_dir, f))
                     for f in FIXTURES + ("stamp",))
    except OSError:
        return False
    return oldest >= max(os.path.getmtime(f) for f in sources)


def write_fixtures(out_dir: str, merges: int = 1500, seed: int = 1) -> None:
    """bpe.gguf (llama-bpe), bpe_gpt2.gguf (the same vocabulary with the
    GPT-2 pre-tokenizer), spm.gguf (llama) and corpus.txt."""
    os.makedirs(out_dir, exist_ok=True)
    stamp = os.path.join(out_dir, "stamp")
    if os.path.exists(stamp):
        os.remove(stamp)
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    corpus = generate_corpus(seed, repo_root=root)
    tmp = os.path.join(out_dir, "corpus.txt.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(corpus)
    os.replace(tmp, os.path.join(out_dir, "corpus.txt"))
    bpe = train_bpe(corpus, merges)
    write_vocab_gguf(bpe, os.path.join(out_dir, "bpe.gguf"))
    write_vocab_gguf(bpe, os.path.join(out_dir, "bpe_gpt2.gguf"), pre="gpt-2")
    write_vocab_gguf(train_spm(corpus, merges), os.path.join(out_dir, "spm.gguf"))
    with open(stamp, "w") as f:
        f.write(f"merges {merges}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    fx = sub.add_parser("fixtures", help="train and write the test vocabularies")
    fx.add_argument("--out", required=True)
    fx.add_argument("--merges", type=int, default=1500)
    fx.add_argument("--force", action="store_true",
                    help="even if the files are newer than this code")
    enc = sub.add_parser("encode", help="token ids of hex-encoded lines")
    enc.add_argument("--vocab", required=True)
    enc.add_argument("--parse-special", type=int, default=0)
    enc.add_argument("--add-bos", type=int, default=0)
    tr = sub.add_parser("train", help="train a vocabulary on a text file")
    tr.add_argument("--corpus", required=True)
    tr.add_argument("--merges", type=int, default=1500)
    tr.add_argument("--model", choices=["gpt2", "llama"], default="gpt2")
    tr.add_argument("-o", "--output", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "fixtures":
        if a.force or not fixtures_up_to_date(a.out, a.merges):
            write_fixtures(a.out, a.merges)
    elif a.cmd == "encode":
        v = Vocab.from_gguf(a.vocab)
        for line in sys.stdin:
            ids = v.encode(bytes.fromhex(line.strip()), bool(a.add_bos),
                           bool(a.parse_special))
            print(" ".join(map(str, ids)))
    else:
        with open(a.corpus, encoding="utf-8") as f:
            corpus = f.read()
        v = train_bpe(corpus, a.merges) if a.model == "gpt2" else \
            train_spm(corpus, a.merges)
        write_vocab_gguf(v, a.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
