"""tools/launch_cache.py (issue 14 experiment): its cache key is at least as fine as what Triton's JIT specialises a
kernel on (checked against Triton's own `native_specialize_impl`, on the CPU), and `CachedLaunch` goes through the JIT
once per key and then launches the compiled kernel with every argument in the kernel's order."""
import sys
from pathlib import Path
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from launch_cache import CachedLaunch, spec_key


def test_key_is_as_fine_as_tritons_specialisation():
    jit = pytest.importorskip("triton.runtime.jit")
    specialize = getattr(jit, "native_specialize_impl", None)
    if specialize is None: pytest.skip("this Triton has no native_specialize_impl")
    from triton.backends.compiler import BaseBackend
    buf = torch.zeros(64, dtype=torch.float32)
    ints = [0, 1, 2, 15, 16, 17, 32, -1, -16, -17, 2**31 - 16, 2**31 - 1, 2**31, 2**31 + 16, -2**31, -2**31 - 1,
            2**63 - 16, 2**63 - 1, 2**63, 2**63 + 16, 2**64 - 16, 2**64 - 1]
    tensors = [buf, buf[1:], buf[4:], buf[4:].double()[:3], torch.zeros(5, dtype=torch.int64), torch.zeros(5, dtype=torch.int32)[1:],
               torch.zeros(3, dtype=torch.float16), torch.zeros(3, dtype=torch.bfloat16)[2:]]
    values = ints + tensors + [0.5, 1.0, 16.0, True, False, None]
    seen = {}
    for v in values:
        triton_says = specialize(BaseBackend, v, False, True, True)
        seen.setdefault(spec_key([v]), set()).add(str(triton_says))
    assert all(len(s) == 1 for s in seen.values()), {k: s for k, s in seen.items() if len(s) > 1}
    assert len(seen) >= 12                                          # and it does tell the cases apart


class FakeCompiled:
    def __init__(self, calls): self.calls = calls
    def __getitem__(self, grid):
        return lambda *args: self.calls.append(("compiled", grid, args))


class FakeJit:
    "A JITFunction's surface: arg_names, and kernel[grid](*args, **constexprs) returning the compiled kernel."
    arg_names = ["x", "n", "scale", "BLOCK", "FLAG"]
    def __init__(self): self.calls = []
    def __getitem__(self, grid):
        def run(*args, **kw):
            self.calls.append(("jit", grid, args, kw)); return FakeCompiled(self.calls)
        return run


def test_cached_launch_goes_through_the_jit_once_per_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    jit = FakeJit(); launch = CachedLaunch(jit)
    x = torch.zeros(32)
    launch[(4, 2)](x, 16, 0.5, BLOCK=64, FLAG=True)
    launch[(4, 2)](x, 32, 0.25, BLOCK=64, FLAG=True)                 # same key: 16 and 32 are both multiples of 16
    launch[(3,)](x[1:], 32, 0.25, BLOCK=64, FLAG=True)               # unaligned pointer: the JIT again
    launch[(4, 2)](x, 17, 0.5, BLOCK=64, FLAG=True)                  # 17: another specialisation
    launch[(4, 2)](x, 16, 0.5, BLOCK=128, FLAG=True)                 # another constexpr
    launch[(5,)](x[1:], 48, 1.0, BLOCK=64, FLAG=True)                # the unaligned key's compiled kernel
    kinds = [c[0] for c in jit.calls]
    assert kinds == ["jit", "compiled", "jit", "jit", "jit", "compiled"]
    assert jit.calls[1][1:] == ((4, 2, 1), (x, 32, 0.25, 64, True))
    assert jit.calls[5][1] == (5, 1, 1) and jit.calls[5][2][1:] == (48, 1.0, 64, True)
