"""The PyTorch reference of the BitNet b1.58 computation (ternd.bitnet_ref)
and its GGUF reader (ternd.gguf_reader): the reader against the writer's
expected values, the full-sequence forward against the KV-cache forward,
the pieces against plain math, every architecture and ternary type on a
64-token sequence, the int8 head's logit error, and sensitivity."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ternd import bitnet_ref as br
from ternd import gguf_writer as gw
from ternd import reference
from ternd.gguf_reader import GGUFFile, GGUFError

torch.set_num_threads(1)

ARCHES = ("bitnet-b1.58", "bitnet-25", "bitnet", "llama")
TERNARY = {"i2_s": gw.T_I2_S, "tq2_0": gw.T_TQ2_0, "tq1_0": gw.T_TQ1_0}
E, F, L, H, HKV, V = 256, 512, 2, 4, 2, 512
SEQ = br.default_tokens(V, 64)


def write_model(tmp_path, arch="bitnet-b1.58", ternary="i2_s", scaled=True,
                seed=1, name=None, **kw):
    opts = gw.well_scaled(E) if scaled else {}
    opts.update(kw)
    b = gw.model_file(arch, E, F, L, H, HKV, V, TERNARY[ternary], seed=seed,
                      **opts)
    path = str(tmp_path / (name or f"{arch}-{ternary}-{int(scaled)}-{seed}.gguf"))
    b.write(path)
    return path, b


# --- the reader ---------------------------------------------------------------

def check_decodes_to_expected(path, builder):
    f = GGUFFile(path)
    assert set(f.tensors) == set(builder.expected)
    for name, e in builder.expected.items():
        if "codes" in e:
            codes, scale = f.ternary(name)
            assert np.array_equal(codes.reshape(-1), e["codes"]), name
            assert np.float32(scale) == e["scale"], name
        else:
            x = f.floats(name).reshape(-1)
            assert np.array_equal(x.view(np.uint32), e["f32"].view(np.uint32)), name


@pytest.mark.parametrize("seed", [1, 2])
def test_reader_decodes_every_type_as_the_writer_expects(tmp_path, seed):
    b = gw.types_file(seed)
    path = str(tmp_path / "types.gguf")
    b.write(path)
    check_decodes_to_expected(path, b)
    f = GGUFFile(path)
    assert f.kv["ternd.test.string"] == "héllo"
    assert f.kv["ternd.test.nested"] == [[1, 2], [3]]
    assert f.kv["ternd.test.u64"] == 2 ** 63 + 5


def test_reader_decodes_a_model_with_k_quants(tmp_path):
    b = gw.model_file("llama", E, F, 1, H, HKV, 300, gw.T_TQ1_0,
                      embd_type=gw.T_Q6_K, head_type=gw.T_Q4_K,
                      norm_type=gw.T_BF16, rope_freqs=True)
    path = str(tmp_path / "k.gguf")
    b.write(path)
    check_decodes_to_expected(path, b)


def test_reader_refuses_differing_tq_block_scales(tmp_path):
    w = np.ones(512, np.int8)
    data = gw.encode_tq2_0(w[:256], 0.5) + gw.encode_tq2_0(w[256:], 0.25)
    g = gw.GGUFWriter()
    g.add_tensor("t", (512,), gw.T_TQ2_0, data)
    path = tmp_path / "s.gguf"
    path.write_bytes(g.to_bytes())
    with pytest.raises(GGUFError, match="block scales differ"):
        GGUFFile(str(path)).ternary("t")


# --- quantization -------------------------------------------------------------

def test_quantize_rows_matches_the_numpy_interpreter_bit_for_bit():
    # Not covered: amax below 127 / FLT_MAX (about 3.7e-37), where 127 / amax
    # is inf and 0 * inf a NaN that the runtime's int8 conversion leaves
    # undefined (docs/llm.md does not say what such a row gives).
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3000, 257, generator=g) * torch.rand(3000, 1, generator=g) * 40
    special = torch.tensor([
        [0.0] * 6,                                  # zero row
        [127.0, 2.5, 3.5, -2.5, 0.5, -0.5],         # ties: half to even
        [1e-30, -1e-39, 5e-40, 0.0, 1e-45, -1e-45],  # subnormals
        [3e38, -3e38, 1.0, -1.0, 1e30, 0.0],        # near float32 max
        [-1.0, 0.0, 0.0, 0.0, 0.0, 1.0 / 3.0],
        [1.4554425477981567, 0.7048008441925049, 0, 0, 0, 0],  # division, not reciprocal
    ])
    for rows in (x, special):
        q, dq = br.quantize_rows(rows)
        q_ref, dq_ref = reference.quantize_rows(rows.numpy())
        assert np.array_equal(q.numpy().astype(np.int8), q_ref)
        assert np.array_equal(q.numpy(), q_ref.astype(np.float32))
        assert np.array_equal(dq.numpy().view(np.uint32), dq_ref.view(np.uint32))


def test_bitlinear_against_integer_math():
    rng = np.random.default_rng(4)
    codes = rng.integers(-1, 2, (37, 300)).astype(np.int64)
    x = (rng.standard_normal((5, 300)) * 3).astype(np.float32)
    lin = br.Ternary(0.3125, codes=torch.from_numpy(codes.astype(np.float32)))
    y = lin(torch.from_numpy(x)).numpy()
    amax = np.abs(x).max(axis=1)
    inv = (np.float32(127) / amax).astype(np.float32)
    q = np.clip(np.rint((x * inv[:, None]).astype(np.float32)), -128, 127).astype(np.int64)
    acc = q @ codes.T
    s = (np.float32(0.3125) * (amax / np.float32(127)).astype(np.float32)).astype(np.float32)
    want = (acc.astype(np.float32) * s[:, None]).astype(np.float32)
    assert np.array_equal(y, want)


# --- pieces against plain math ---------------------------------------------------

def test_rope_of_a_known_vector():
    d, base, p = 4, 10000.0, 3
    cos, sin = br.rope_tables(torch.tensor([p]), d, base, None)
    x = torch.tensor([[[1.0, 2.0, -0.5, 4.0]]])
    t0, t1 = p * 1.0, p * base ** (-2 / d)
    c0, s0, c1, s1 = math.cos(t0), math.sin(t0), math.cos(t1), math.sin(t1)
    want = [1 * c0 - 2 * s0, 1 * s0 + 2 * c0, -0.5 * c1 - 4 * s1, -0.5 * s1 + 4 * c1]
    got = br.apply_rope(x, cos, sin, "norm").reshape(-1).tolist()
    assert got == pytest.approx(want, rel=1e-6, abs=1e-6)
    # neox pairs (i, i + D/2): (1, -0.5) and (2, 4)
    want_neox = [1 * c0 + 0.5 * s0, 2 * c1 - 4 * s1, 1 * s0 - 0.5 * c0, 2 * s1 + 4 * c1]
    got = br.apply_rope(x, cos, sin, "neox").reshape(-1).tolist()
    assert got == pytest.approx(want_neox, rel=1e-6, abs=1e-6)
    # rope_freqs divides theta; position 0 is the identity
    cos_f, sin_f = br.rope_tables(torch.tensor([p]), d, base, torch.tensor([2.0, 8.0]))
    assert float(cos_f[0, 1]) == pytest.approx(math.cos(t1 / 8), rel=1e-7)
    cos0, sin0 = br.rope_tables(torch.tensor([0]), d, base, None)
    assert torch.equal(br.apply_rope(x, cos0, sin0), x)


def test_attention_of_two_tokens_and_the_gqa_head_mapping():
    # 2 query heads share 1 KV head; D = 4.
    k = torch.tensor([[[1.0, 0.0, 2.0, -1.0]], [[0.5, 1.0, -1.0, 0.0]]])
    v = torch.tensor([[[1.0, 2.0, 3.0, 4.0]], [[-2.0, 0.0, 1.0, 0.5]]])
    q = torch.tensor([[[0.3, -0.2, 0.1, 0.7], [1.0, 1.0, 1.0, 1.0]]] * 2)
    o = br.attention(q, torch.tensor([0, 1]), k, v).reshape(2, 2, 4)
    # position 0 sees only token 0
    assert torch.equal(o[0, 0], v[0, 0]) and torch.equal(o[0, 1], v[0, 0])
    for j in range(2):
        s = [sum(a * b for a, b in zip(q[1, j].tolist(), k[t, 0].tolist())) / 2.0
             for t in range(2)]
        m = max(s)
        e = [math.exp(x - m) for x in s]
        want = [(e[0] * v[0, 0, i].item() + e[1] * v[1, 0, i].item()) / sum(e)
                for i in range(4)]
        assert o[1, j].tolist() == pytest.approx(want, rel=1e-6, abs=1e-6)
    # 4 heads, 2 KV heads: heads 0, 1 read KV head 0; heads 2, 3 KV head 1
    kv2 = torch.zeros(1, 2, 4)
    vv = torch.tensor([[[1.0] * 4, [7.0] * 4]])
    o = br.attention(torch.randn(1, 4, 4), torch.tensor([0]), kv2, vv).reshape(4, 4)
    assert o[:, 0].tolist() == [1.0, 1.0, 7.0, 7.0]


def test_activations_and_rms_norm_against_plain_math():
    g = torch.tensor([-3.0, -0.5, 0.0, 0.5, 2.0, 100.0, -100.0])
    assert br.relu2(g).tolist() == [0.0, 0.0, 0.0, 0.25, 4.0, 10000.0, 0.0]
    want = [x / (1 + math.exp(-x)) for x in g.tolist()]
    assert br.silu(g).tolist() == pytest.approx(want, rel=1e-6, abs=1e-30)
    x = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    gain = torch.tensor([1.0, 2.0, 0.5, -1.0])
    eps = torch.tensor(1e-5)
    r = 1 / math.sqrt((1 + 4 + 9 + 0.25) / 4 + 1e-5)
    want = [1 * r, -2 * r * 2, 3 * r * 0.5, -0.5 * r]
    assert br.rms_norm(x, gain, eps)[0].tolist() == pytest.approx(want, rel=1e-6)


def test_activation_follows_the_architecture(tmp_path):
    path, _ = write_model(tmp_path, "bitnet-b1.58")
    assert br.BitNetRef(path).activation == "relu2"
    for arch, act in (("bitnet-25", "relu2"), ("bitnet", "silu"), ("llama", "silu")):
        p, _ = write_model(tmp_path, arch)
        assert br.BitNetRef(p).activation == act
    a = br.BitNetRef(path, head="f16").forward(SEQ[:16])
    b = br.BitNetRef(path, head="f16", activation="silu").forward(SEQ[:16])
    assert not torch.equal(a, b)


def test_kv_cache_holds_float16_values(tmp_path):
    path, _ = write_model(tmp_path)
    s = br.BitNetRef(path).session()
    for t in SEQ[:5]:
        s.step(t)
    for k, v in zip(s.k, s.v):
        assert k.shape == (5, HKV, E // H)
        assert torch.equal(k, k.half().float()) and torch.equal(v, v.half().float())


def test_int8_head_and_tied_embeddings_are_the_dequantized_rows(tmp_path):
    path, b = write_model(tmp_path)
    m = br.BitNetRef(path, head="int8")
    embd = torch.from_numpy(b.expected["token_embd.weight"]["f32"].reshape(V, E))
    q, sc = reference.quantize_rows(embd.numpy())
    every = torch.arange(V)
    assert np.array_equal(m.embed(every).numpy(),
                          (q.astype(np.float32) * sc[:, None]).astype(np.float32))
    assert torch.equal(br.BitNetRef(path, head="f16").embed(every), embd.half().float())
    assert torch.equal(br.BitNetRef(path, head="f32").embed(every), embd)


# --- the whole model ------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("ternary", list(TERNARY))
def test_full_sequence_equals_kv_cache_and_logits_are_varied(tmp_path, arch, ternary):
    """Bit-exact: every position goes through the same float32 operations in
    both paths (BitLinear sums are exact integers; the other reductions are
    float64 rounded once, so their order does not show in float32)."""
    for scaled in (True, False):
        path, _ = write_model(tmp_path, arch, ternary, scaled)
        m = br.BitNetRef(path, head="int8")
        trace = {}
        full = m.forward(SEQ, trace=trace)
        inc = m.forward_incremental(SEQ)
        assert full.shape == (64, V)
        assert torch.equal(full, inc)
        assert all(torch.isfinite(h).all() for h in trace.values())
        assert torch.isfinite(full).all()
        # varied: across the vocabulary at every position, and across positions
        assert (full.std(dim=1) > 0.5).all()
        assert len(set(full.argmax(1).tolist())) > 16
        rms = [float(h.pow(2).mean().sqrt()) for h in trace.values()]
        if scaled:
            assert max(rms) < 10, rms


def test_full_equals_kv_cache_with_rope_freqs_gqa_and_an_untied_head(tmp_path):
    path, _ = write_model(tmp_path, "llama", "i2_s", rope_freqs=True,
                          head_type=gw.T_Q8_0, embd_type=gw.T_BF16)
    for head in br.HEADS:
        m = br.BitNetRef(path, head=head)
        assert m.rope_freqs is not None and not m.tied
        assert torch.equal(m.forward(SEQ), m.forward_incremental(SEQ))


@pytest.mark.parametrize("scaled", [False, True])
def test_greedy_is_the_arg_max_of_the_full_forward(tmp_path, scaled):
    path, _ = write_model(tmp_path, "bitnet-b1.58", "tq2_0", scaled)
    m = br.BitNetRef(path, head="int8")
    prompt = SEQ[:8]
    gen = m.greedy(prompt, 24)
    full = m.forward(prompt + gen[:-1])
    assert full[len(prompt) - 1:].argmax(1).tolist() == gen
    if not scaled:
        assert len(set(gen)) > 8  # a real test: not one token repeated


def test_context_length_is_enforced(tmp_path):
    path, _ = write_model(tmp_path, context=8)
    m = br.BitNetRef(path)
    with pytest.raises(ValueError, match="context_length"):
        m.forward(SEQ[:9])
    s = m.session()
    for t in SEQ[:8]:
        s.step(t)
    with pytest.raises(ValueError, match="context_length"):
        s.step(1)


def test_one_ternary_code_changes_the_logits(tmp_path):
    """Sensitivity through the file: flip one code of blk.1.ffn_down and
    re-encode the tensor; the reader sees that code and the logits move."""
    for ternary in TERNARY:
        path, b = write_model(tmp_path, "bitnet-b1.58", ternary, name="a.gguf")
        name = "blk.1.ffn_down.weight"
        e = b.expected[name]
        codes = e["codes"].copy()
        i = 1000
        codes[i] = 1 if codes[i] != 1 else -1
        data, _ = gw.encode_ternary(codes, TERNARY[ternary], float(e["scale"]))
        b.w.tensors = [(n, d, t, data if n == name else raw)
                       for n, d, t, raw in b.w.tensors]
        path2 = str(tmp_path / "b.gguf")
        b.write(path2)
        c2, _ = GGUFFile(path2).ternary(name)
        assert int((c2.reshape(-1) != e["codes"]).sum()) == 1
        a = br.BitNetRef(path, head="f16").forward(SEQ)
        z = br.BitNetRef(path2, head="f16").forward(SEQ)
        assert not torch.equal(a, z)
        assert float((a - z).abs().max()) > 1e-4


# --- the int8 head's error ----------------------------------------------------------

def test_int8_head_error_is_reported(tmp_path, capsys):
    rows = []
    for tied, scaled in ((True, True), (False, True), (True, False), (False, False)):
        kw = {} if tied else {"head_type": gw.T_F16}
        path, _ = write_model(tmp_path, "bitnet-b1.58", "i2_s", scaled, **kw)
        r = br.head_error(path, SEQ)
        rows.append((tied, scaled, r))
        head = r["head_only_int8_vs_f16"]
        assert 0 < head["max_abs"] and head["rel"] < 0.02
        assert head["argmax_agree"] >= 0.9
        whole = r["int8_vs_f16"]
        if not tied:  # only the head differs
            assert whole == head
        assert whole["rel"] < 1.0
    with capsys.disabled():
        print()
        for tied, scaled, r in rows:
            for key in ("head_only_int8_vs_f16", "int8_vs_f16"):
                e = r[key]
                print(f"{key} ({'tied' if tied else 'untied'}, "
                      f"{'well-scaled' if scaled else 'default'} E={E} V={V}, 64 tokens): "
                      f"max abs {e['max_abs']:.4g}, rel {e['rel']:.3g}, "
                      f"rms {e['rms']:.3g}, arg max agrees {e['argmax_agree']:.3f} "
                      f"(|logit| max {r['logit_max_abs']:.3g})")


# --- the CLI ---------------------------------------------------------------------

def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(os.path.dirname(__file__), "..", "..", "python")]
        + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    return subprocess.run([sys.executable, "-m", "ternd.bitnet_ref", *args],
                          env=env, capture_output=True, text=True, check=True)


def test_cli_make_logits_greedy(tmp_path):
    path = str(tmp_path / "c.gguf")
    run_cli("make", path, "--arch", "bitnet", "--ternary", "tq1_0", "--vocab", "300",
            "--seed", "5")
    toks = SEQ[:10]
    tok_arg = ",".join(map(str, [t % 300 for t in toks]))
    out = str(tmp_path / "l.f32")
    run_cli("logits", path, "--tokens", tok_arg, "--head", "f16", "-o", out)
    lg = np.fromfile(out, "<f4").reshape(10, 300)
    m = br.BitNetRef(path, head="f16")
    assert np.array_equal(lg, m.forward([t % 300 for t in toks]).numpy())
    g = run_cli("greedy", path, "--tokens", tok_arg, "-n", "5", "--head", "f16")
    assert g.stdout.strip() == ",".join(map(str, m.greedy([t % 300 for t in toks], 5)))


# --- the released-shape files (streamed) -------------------------------------------

def test_streaming_packers_match_the_writer():
    from ternd import make_2b4t as mk
    c = np.random.default_rng(9).integers(-1, 2, 256 * 5).astype(np.int8)
    assert mk.pack_i2s(c) + gw.struct.pack("<f", 0.5) + bytes(28) == gw.encode_i2s(c, 0.5)
    assert mk.pack_tq2_0(c, 0.3) == gw.encode_tq2_0(c, 0.3)
    assert mk.pack_tq1_0(c, 0.3) == gw.encode_tq1_0(c, 0.3)


@pytest.mark.parametrize("ternary", list(TERNARY))
def test_streamed_small_shape_reads_back_and_runs_lazily(tmp_path, ternary):
    from ternd import make_2b4t as mk
    shape = dict(mk.SHAPES["2b4t"], hidden=E, ffn=F, layers=2, heads=4,
                 kv_heads=1, vocab=300, context=64)
    path = str(tmp_path / "s.gguf")
    mk.write(path, shape, TERNARY[ternary], seed=3)
    f = GGUFFile(path)
    assert f.kv["bitnet-b1.58.attention.head_count_kv"] == 1
    assert f.info("blk.1.ffn_down.weight").dims == (F, E)
    codes, scale = f.ternary("blk.1.ffn_down.weight")
    assert set(np.unique(codes)) == {-1, 0, 1} and scale > 0
    m = br.BitNetRef(path, head="int8")
    lazy = br.BitNetRef(path, head="int8", lazy=True)
    toks = [t % 300 for t in SEQ[:20]]
    full = m.forward(toks)
    assert torch.isfinite(full).all() and (full.std(dim=1) > 0.5).all()
    assert torch.equal(full, lazy.forward(toks))
    assert torch.equal(full, lazy.forward_incremental(toks))
