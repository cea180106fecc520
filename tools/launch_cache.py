"""Issue 14 experiment: launch the loss kernel through the compiled kernel Triton's JIT returned, skipping the JIT's
per-call work (binding and specialising ~33 arguments, building its cache key: 28 µs of host time a launch on an H200
host, against 10 µs through the compiled kernel; tools/profile_launch.py). Not used by pat/: the next GPU session
measures it end to end (`python tools/loss_ab.py --old HEAD --cached-launch`) and runs the kernel tests with it before
anything lands.

It is correct only if the cache key is at least as fine as what the JIT specialises a kernel on. That is, per runtime
argument: a tensor's dtype and whether its address is a multiple of 16; an integer's value class (equal to 1, a multiple
of 16, in int32 / uint64 range); the type of anything else; and the constexpr keywords. `spec_key` keys on exactly
those; tests/test_launch_cache.py checks it against Triton's own `native_specialize_impl` on the CPU."""
import torch

def int_range(a: int) -> int:
    "0: int32, 1: int64, 2: beyond (Triton: uint64 up to 2**64 - 1)."
    return 0 if -2 ** 31 <= a < 2 ** 31 else 1 if -2 ** 63 <= a < 2 ** 63 else 2


def spec_key(args) -> tuple:
    "What Triton's JIT specialises the runtime arguments `args` on, one entry per argument."
    return tuple((a.dtype, a.data_ptr() % 16 == 0) if isinstance(a, torch.Tensor) else
                 (a == 1, a % 16 == 0, int_range(a)) if type(a) is int else type(a) for a in args)


class CachedLaunch:
    """Stands in for a Triton `JITFunction` launched as `kernel[grid](*args, **constexprs)`: the first call of each
    (device, `spec_key`, constexprs) goes through the JIT, which compiles if it must and returns the compiled kernel;
    later calls launch that compiled kernel directly, with every argument in the kernel's order."""
    def __init__(self, jit):
        self.jit, self.names, self.compiled = jit, jit.arg_names, {}

    def __getitem__(self, grid):
        def launch(*args, **constexprs):
            key = (torch.cuda.current_device(), spec_key(args), tuple(constexprs.items()))
            kernel = self.compiled.get(key)
            if kernel is None:
                self.compiled[key] = self.jit[grid](*args, **constexprs)
                return
            kernel[grid + (1,) * (3 - len(grid))](*args, *(constexprs[n] for n in self.names[len(args):]))
        return launch


if __name__ == "__main__":          # on a GPU: the Triton tests with every loss-kernel launch going through CachedLaunch
    import sys
    from pathlib import Path
    import pytest
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from pat import triton_losses
    triton_losses._loss_kernel = CachedLaunch(triton_losses._loss_kernel)
    sys.exit(pytest.main(["-q", "-rfE", "-x", "-p", "no:cacheprovider", str(root / "tests" / "test_triton.py"), *sys.argv[1:]]))
