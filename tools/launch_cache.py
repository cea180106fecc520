"""Issue 14 experiment: launch the loss kernel through the compiled kernel Triton's JIT returned, skipping the JIT's
per-call work (binding and specialising ~33 arguments, building its cache key: 28 µs of host time a launch on an H200
host, against 10 µs through the compiled kernel; tools/profile_launch.py). Not used by pat/: the next GPU session
measures it end to end (`python tools/loss_ab.py --old pat/triton_losses.py --cached-launch`) and runs the kernel tests with it before
anything lands.

It is correct only if the cache key is at least as fine as what the JIT specialises a kernel on. That is, per runtime
argument: a tensor's dtype and whether its address is a multiple of 16; an integer's value class (equal to 1, a multiple
of 16, its int32 / int64 / uint64 range); the type of anything else; and the constexpr keywords. `spec_key` keys on exactly
those; tests/test_launch_cache.py checks it against Triton's own `native_specialize_impl` on the CPU.

What it can save, on the CPU (`python tools/launch_cache.py --host`: a stand-in driver, the launch a no-op; this
machine, 2026-11-28, two runs): JIT 22.0 / 26.5 µs, CachedLaunch 17.5 / 17.8 µs, of which `spec_key` over the 33
arguments is 10.1 µs. So the key, not the launch, is now the cost; a key over only the arguments that can change
between calls (the logits, labels and class tables, the integers) would be the next step if the GPU A/B shows the
launch worth it."""
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


def host_times(rounds: int = 15) -> dict:
    """On the CPU: µs per launch of the loss kernel's arguments ([2,20,4,4], CE) through Triton's JIT and through
    `CachedLaunch`, with a stand-in driver and a compiled kernel whose launch is a no-op, and of `spec_key` alone: the
    host's share of each path (a real launch adds the same driver call to both; an H200 host paid 28 µs through the JIT)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from loss_timing import interleaved, loss_kernel_call
    from triton.runtime import driver
    from triton.backends.compiler import GPUTarget
    import pat.triton_losses as TL

    class Driver:
        def get_current_device(self): return 0
        def get_current_stream(self, device): return 0
        def get_current_target(self): return GPUTarget("cuda", 90, 32)

    class Compiled:                                   # what the JIT returns, its launch a no-op
        function = packed_metadata = None
        def launch_metadata(self, grid, stream, *args): return None
        def run(self, *args): pass
        def __getitem__(self, grid):
            return lambda *args: self.run(*grid, 0, self.function, self.packed_metadata, self.launch_metadata(grid, 0, *args), None, None, *args)

    driver.set_active(Driver())
    torch.cuda.current_device = lambda: 0
    kernel = TL._loss_kernel
    def compile_stub(key, signature, device, constexprs, options, attrs, warmup):
        compiled = kernel.device_caches[device][0][key] = Compiled(); return compiled
    kernel._do_compile = compile_stub
    grid, args, kw = loss_kernel_call(torch.randn(2, 20, 4, 4), torch.randint(0, 20, (2, 4, 4)), TL.LossSpec())
    cached = CachedLaunch(kernel)
    fns = {"JIT": lambda: kernel[grid](*args, **kw), "CachedLaunch": lambda: cached[grid](*args, **kw),
           "spec_key alone": lambda: spec_key(args)}
    for fn in fns.values(): fn()                      # compile (the stub) and fill the cache
    torch.set_num_threads(1)
    print(f"{len(args)} runtime arguments; µs per launch, best (median) of {rounds} interleaved rounds of 2000", flush=True)
    times = interleaved(fns, 2000, rounds)
    for name, (best, median) in times.items(): print(f"{name:15s} {best:6.1f} ({median:6.1f})", flush=True)
    return times


if __name__ == "__main__":          # on a GPU: the Triton tests with every loss-kernel launch going through CachedLaunch
    import argparse, sys
    from pathlib import Path
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog="Other arguments go to pytest (tests/test_triton.py).")
    cli.add_argument("--host", action="store_true", help="on the CPU: the host's share of each launch path")
    args, rest = cli.parse_known_args()
    if args.host: host_times(); sys.exit(0)
    import pytest
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from pat import triton_losses
    triton_losses._loss_kernel = CachedLaunch(triton_losses._loss_kernel)
    sys.exit(pytest.main(["-q", "-rfE", "-x", "-p", "no:cacheprovider", str(root / "tests" / "test_triton.py"), *rest]))
