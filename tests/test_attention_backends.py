"""Packed attention's backends (models/attention.py): which one runs where and why, the custom
ops against SDPA per utterance, the FA4 wrapper's plumbing (its kernels need a Hopper GPU: a CUDA
test checks them there), and the compiled block stack: one graph over batch sizes."""

import logging
import types

import pytest
import torch
import torch.nn.functional as F

from astctc.models import attention as A
from astctc.models.encoder import ASTEncoder, EncoderConfig
from astctc.models.heads import CTCHeadConfig
from astctc.models.model import ASTModel, ModelConfig
from tests.test_model import small

CUDA = torch.device("cuda")  # a device object needs no GPU: `choose` is asked about one below


def _packed(lens, heads=2, dim=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(sum(lens), heads, dim, generator=g).to(dtype) for _ in range(3))
    cu = torch.tensor([0] + lens).cumsum(0).to(torch.int32)
    return q, k, v, A.Packed(cu, max(lens))


def _reference(q, k, v, lens):
    """fp32 attention per utterance: the standard the kernels are held to."""
    outs = []
    for qi, ki, vi in zip(*(t.float().split(lens) for t in (q, k, v))):
        o = F.scaled_dot_product_attention(*(t.transpose(0, 1)[None] for t in (qi, ki, vi)))
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs)


# ------------------------------------------------------------------------------ choosing


@pytest.fixture
def hopper(monkeypatch):
    """A pretend SM90 GPU with flash attention in torch and flash-attn-4 importing."""
    state = types.SimpleNamespace(capability=(9, 0), fa4_error=None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: state.capability)
    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: True)
    monkeypatch.setattr(A, "fa4_import_error", lambda: state.fa4_error)
    return state


def test_auto_takes_fa4_then_fa2_then_sdpa(hopper):
    assert A.choose("auto", CUDA, torch.bfloat16, 64, 0.0) == "fa4"
    hopper.fa4_error = "flash_attn.cute does not import (ModuleNotFoundError: No module named 'flash_attn')"
    assert A.choose("auto", CUDA, torch.bfloat16, 64, 0.0) == "fa2"
    hopper.fa4_error, hopper.capability = None, (8, 0)  # an A100: FA4 is Hopper/Blackwell only
    assert A.choose("auto", CUDA, torch.bfloat16, 64, 0.0) == "fa2"
    hopper.capability = (10, 0)
    assert A.choose("auto", CUDA, torch.float16, 128, 0.0) == "fa4"
    assert A.choose("auto", CUDA, torch.bfloat16, 160, 0.0) == "fa2"  # FA4 on SM100: head size <= 128
    assert A.choose("auto", CUDA, torch.float32, 64, 0.0) == "sdpa"  # no bf16 autocast
    assert A.choose("auto", CUDA, torch.bfloat16, 12, 0.0) == "sdpa"  # not a multiple of 8
    assert A.choose("auto", CUDA, torch.bfloat16, 64, 0.1) == "sdpa"  # attention dropout


def test_auto_on_the_cpu_is_sdpa_and_the_log_says_why(caplog):
    A._logged.clear()
    with caplog.at_level(logging.INFO, logger="astctc.models.attention"):
        assert A.choose("auto", torch.device("cpu"), torch.float32, 16, 0.0) == "sdpa"
        A.choose("auto", torch.device("cpu"), torch.float32, 16, 0.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, "logged once per kind of call"
    assert "attention backend: sdpa" in lines[0] and "not fa4: it needs a CUDA device" in lines[0], lines


@pytest.mark.parametrize(
    "backend, kind, why",
    [
        ("fa4", (torch.device("cpu"), torch.bfloat16, 64, 0.0), "needs a CUDA device"),
        ("fa2", (CUDA, torch.float32, 64, 0.0), "fp16 or bf16"),
        ("fa4", (CUDA, torch.bfloat16, 64, 0.1), "no attention dropout"),
        ("fa2", (CUDA, torch.bfloat16, 12, 0.0), "head size 12"),
    ],
)
def test_a_named_backend_that_cannot_run_is_an_error(hopper, backend, kind, why):
    with pytest.raises(ValueError, match=f"attention_backend {backend} cannot run here: .*{why}"):
        A.choose(backend, *kind)


def test_fa4_named_where_it_does_not_import_is_an_error(hopper):
    hopper.fa4_error = "flash_attn.cute does not import (ModuleNotFoundError: No module named 'flash_attn')"
    with pytest.raises(ValueError, match="fa4 cannot run here: flash_attn.cute does not import"):
        A.choose("fa4", CUDA, torch.bfloat16, 64, 0.0)
    assert A.choose("sdpa", CUDA, torch.bfloat16, 64, 0.0) == "sdpa"  # always runs


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="attention_backend must be one of auto, fa4, fa2, sdpa"):
        ASTEncoder(small("frame", attention="packed", attention_backend="fa3"))
    with pytest.raises(ValueError, match="attention_backend fa4 needs encoder.attention packed"):
        ASTEncoder(small("frame", attention_backend="fa4"))
    enc = ASTEncoder(small("frame", attention="packed", attention_backend="fa2"))
    with pytest.raises(ValueError, match="attention_backend fa2 cannot run here: it needs a CUDA device"):
        enc(torch.randn(2, 40, 128), torch.tensor([40, 30]))


# ------------------------------------------------------------------------------ kernels


def test_sdpa_op_equals_the_eager_loop_forward_and_backward():
    """The compiled path's op and the eager loop run the same CPU kernels: equal, bit for bit."""
    lens = [13, 7, 21]
    q, k, v, packed = _packed(lens)
    results = []
    for fn in (
        lambda *x: A._sdpa_loop(*x, packed.cu_cpu, 0.0),
        lambda *x: torch.ops.astctc.varlen_sdpa(*x, packed.cu_cpu)[0],
    ):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = fn(*leaves)
        out.square().sum().backward()
        results.append([out.detach()] + [t.grad for t in leaves])
    assert all(torch.equal(a, b) for a, b in zip(*results))
    assert torch.allclose(results[0][0], _reference(q, k, v, lens), atol=1e-6)


def test_sdpa_math_path_equals_the_cpu_kernels():
    """Off the CPU the sdpa op computes in fp32 math; its forward and backward equal SDPA's."""
    g = torch.Generator().manual_seed(3)
    q, k, v, grad = (torch.randn(1, 3, 17, 8, generator=g) for _ in range(4))
    out, lse = A._sdpa_forward(q, k, v)  # the CPU kernels
    m_out, m_lse = A._math_forward(q, k, v)
    assert torch.allclose(out, m_out, atol=1e-6) and torch.allclose(lse, m_lse, atol=1e-5)
    for a, b in zip(A._sdpa_backward(grad, q, k, v, out, lse), A._math_backward(grad, q, k, v, out, lse)):
        assert torch.allclose(a, b, atol=1e-5)


def test_custom_ops_pass_torch_library_opcheck():
    """Schemas, fake implementations (what torch.compile traces with: their strides must be the
    real outputs', also for inputs that are not contiguous) and autograd registrations."""
    q, k, v, packed = _packed([5, 9, 3])
    leaves = [t.requires_grad_() for t in (q, k, v)]
    torch.library.opcheck(torch.ops.astctc.varlen_sdpa, (*leaves, packed.cu_cpu))
    strided = [t.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_() for t in (q, k, v)]
    assert not strided[0].is_contiguous()
    torch.library.opcheck(torch.ops.astctc.varlen_sdpa, (*strided, packed.cu_cpu))


def _fake_fa4():
    """flash_attn.cute.interface's two functions, as SDPA per utterance on the CPU, taking what FA4
    4.0.0b40 takes (positional q, k, v [, out, dout, lse]; the varlen keywords): the wrapper's
    plumbing (custom ops, autograd, fakes) is tested here, FA4's kernels on a GPU."""
    calls = []

    def fwd(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, return_lse):
        assert return_lse and cu_seqlens_q is cu_seqlens_k and isinstance(max_seqlen_q, int)
        calls.append("fwd")
        out, lse = torch.ops.astctc.varlen_sdpa(q, k, v, cu_seqlens_q)
        return out, lse, None, None, None

    def bwd(q, k, v, out, dout, lse, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k):
        assert lse.dtype == torch.float32 and lse.shape == (q.shape[1], q.shape[0])
        calls.append("bwd")
        return torch.ops.astctc.varlen_sdpa_backward(dout, q, k, v, out, lse, cu_seqlens_q)

    return types.SimpleNamespace(_flash_attn_fwd=fwd, _flash_attn_bwd=bwd, calls=calls)


def test_fa4_wrapper_forward_backward_and_opcheck(monkeypatch):
    fake = _fake_fa4()
    monkeypatch.setattr(A, "_fa4_interface", lambda: fake)
    lens = [11, 4, 16]
    q, k, v, packed = _packed(lens)
    grads = {}
    for backend in ("sdpa", "fa4"):
        packed.backend = backend
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = A.packed_attention(*leaves, packed)
        out.square().sum().backward()
        grads[backend] = [out.detach()] + [t.grad for t in leaves]
    assert fake.calls == ["fwd", "bwd"]
    assert all(torch.equal(a, b) for a, b in zip(grads["sdpa"], grads["fa4"]))
    for layout in (lambda t: t.clone(), lambda t: t.transpose(0, 1).contiguous().transpose(0, 1)):
        leaves = [layout(t).requires_grad_() for t in (q, k, v)]
        torch.library.opcheck(torch.ops.astctc.fa4_varlen, (*leaves, packed.cu_seqlens, packed.max_len))


def test_fa4_interface_missing_is_a_reason_not_a_crash(monkeypatch):
    A._fa4_interface.cache_clear()
    monkeypatch.setitem(__import__("sys").modules, "flash_attn", None)  # import fails
    assert A.fa4_import_error().startswith("flash_attn.cute does not import")
    A._fa4_interface.cache_clear()


# ------------------------------------------------------------------------------ compiled stack


def _model(layout: str, **kw) -> ASTModel:
    torch.manual_seed(0)
    return ASTModel(ModelConfig(small(layout, **kw), CTCHeadConfig(vocab_size=12, dropout=0.0)))


def _run(model, lens, seed):
    g = torch.Generator().manual_seed(seed)
    out = model(torch.randn(len(lens), max(lens), 128, generator=g), torch.tensor(lens))
    loss = sum(out["log_probs"][b, :n].logsumexp(-1).sum() for b, n in enumerate(out["lengths"].tolist()))
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return out["log_probs"].detach(), grads


BATCHES = [[400, 257, 31, 9], [300, 120], [512, 500, 480, 100, 60], [333, 90, 45], [200, 180]]


@pytest.mark.parametrize(
    "layout, attention",
    [("frame", "packed"), ("frame+conv", "packed"), ("ast16x16+conv", "packed"), ("ast16x16", "padded")],
)
def test_compiled_stack_is_one_graph_over_batch_sizes(layout, attention):
    """torch.compile(dynamic=True) of the block stack: no graph break (attention is a custom op),
    no recompilation over batch sizes and lengths (padded: a batch without padding, whose mask is
    None, would be a second graph; these all have padding), and the eager model's numbers.
    Dynamo's work is the same whatever the backend: aot_eager keeps it quick on the CPU."""
    from torch._dynamo.utils import counters

    eager, compiled = _model(layout, attention=attention), _model(layout, attention=attention)
    compiled.encoder.compile_blocks(backend="aot_eager")
    torch._dynamo.reset()
    counters.clear()
    for i, lens in enumerate(BATCHES):
        want, got = _run(eager, lens, i), _run(compiled, lens, i)
        assert torch.allclose(want[0], got[0], atol=1e-5) and torch.allclose(want[1], got[1], atol=1e-5, rtol=1e-4)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_compiled_stack_with_inductor_on_the_cpu():
    """The real compiler (inductor) on the packed stack over three batch sizes: one graph and the
    eager model's outputs and gradients (a minute of compilation on a busy 2-core machine)."""
    from torch._dynamo.utils import counters

    eager, compiled = _model("frame", attention="packed", depth=2), _model("frame", attention="packed", depth=2)
    compiled.encoder.compile_blocks()
    torch._dynamo.reset()
    counters.clear()
    for i, lens in enumerate(BATCHES[:3]):
        want, got = _run(eager, lens, i), _run(compiled, lens, i)
        assert torch.allclose(want[0], got[0], atol=1e-4) and torch.allclose(want[1], got[1], atol=1e-4, rtol=1e-3)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


def test_attention_dropout_keeps_its_loop_eager():
    """Attention dropout has no custom op: under compile it is a graph break per block, and works."""
    from torch._dynamo.utils import counters

    model = _model("frame", attention="packed", attn_dropout=0.1).train()
    model.encoder.compile_blocks(backend="aot_eager")
    torch._dynamo.reset()
    counters.clear()
    _, grads = _run(model, [120, 80], 0)
    assert torch.isfinite(grads).all() and counters["graph_break"]


# ------------------------------------------------------------------------------ bf16 residual


def test_bf16_residual_stream_under_autocast():
    """bf16_residual: the blocks receive bf16 under bf16 autocast (fp32 otherwise), and the outputs
    stay within bf16 rounding of the fp32 residual's."""
    seen = {}
    outs = {}
    for flag in (False, True):
        model = _model("frame", attention="packed", bf16_residual=flag).eval()
        hook = model.encoder.encoder.layer[1].register_forward_pre_hook(lambda m, a: seen.__setitem__(flag, a[0].dtype))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            outs[flag] = model(
                torch.randn(2, 300, 128, generator=torch.Generator().manual_seed(0)), torch.tensor([300, 170])
            )
        hook.remove()
    assert seen == {False: torch.float32, True: torch.bfloat16}
    a, b = outs[False]["log_probs"][1, :85].float(), outs[True]["log_probs"][1, :85].float()
    assert (a - b).abs().max() < 0.1 and (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9
    with torch.no_grad():  # no autocast: nothing changes
        enc = _model("frame", bf16_residual=True).encoder
        assert enc.residual_dtype(torch.device("cpu")) is None


# ------------------------------------------------------------------------------ CUDA


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA kernels")


@needs_cuda
@pytest.mark.parametrize("backend", ["fa4", "fa2", "sdpa"])
def test_backend_against_fp32_attention_on_cuda(backend):
    """Each backend that can run here, in bf16, against fp32 attention per utterance: outputs and
    q/k/v gradients within bf16 tolerance (relative 2e-2), head size 64, unequal lengths."""
    why = A.unavailable(backend, CUDA, torch.bfloat16, 64, 0.0)
    if why is not None:
        pytest.skip(f"{backend}: {why}")
    lens = [1500, 1210, 700, 333, 17]
    q, k, v, packed = _packed(lens, heads=12, dim=64)
    g = torch.randn(sum(lens), 12, 64, generator=torch.Generator().manual_seed(9)).cuda()
    ref = [t.cuda().requires_grad_() for t in (q, k, v)]
    (_reference(*ref, lens) * g).sum().backward()
    leaves = [t.cuda().bfloat16().requires_grad_() for t in (q, k, v)]
    cu = packed.cu_seqlens.cuda()
    out = A.packed_attention(*leaves, A.Packed(cu, packed.max_len, packed.cu_cpu, backend))
    (out.float() * g).sum().backward()

    def rel(a, b):
        return float((a.float() - b.float()).norm() / b.float().norm())

    assert rel(out, _reference(*ref, lens)) < 2e-2
    for got, want in zip(leaves, ref):
        assert rel(got.grad, want.grad) < 2e-2, backend


@needs_cuda
def test_compiled_packed_encoder_on_cuda_one_graph():
    """On CUDA under bf16 autocast with the backend auto picks: one inductor graph, three batches."""
    from torch._dynamo.utils import counters

    model = _model("frame", attention="packed", embed_dim=128, num_heads=2).cuda()
    model.encoder.compile_blocks()
    torch._dynamo.reset()
    counters.clear()
    for lens in BATCHES[:3]:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(torch.randn(len(lens), max(lens), 128, device="cuda"), torch.tensor(lens))
        out["log_probs"].float().sum().backward()
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


def test_encoder_config_defaults_keep_checkpoints_loading():
    cfg = EncoderConfig()
    assert cfg.attention_backend == "auto" and cfg.bf16_residual is False
