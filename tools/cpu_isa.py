"""Whether CPU training depends on the instruction set torch's kernels use: 20 SGD steps of a small conv net, in a fresh
process per setting of `ONEDNN_MAX_CPU_ISA` / `ATEN_CPU_CAPABILITY`, each printing a hash of the final weights and the
last loss. Different hashes mean a run trained on another CPU (another vector instruction set) gives other numbers
(README, "Results of the default profile"):

    python tools/cpu_isa.py
"""
import argparse, os, subprocess, sys

STEPS = r"""
import hashlib, torch
torch.manual_seed(0); torch.set_num_threads(1)
m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.Conv2d(16, 9, 3, padding=1))
x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 9, (8, 32, 32))
opt = torch.optim.SGD(m.parameters(), lr=0.02, momentum=0.9)
for _ in range(20):
    opt.zero_grad(); loss = torch.nn.functional.cross_entropy(m(x), y); loss.backward(); opt.step()
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest()[:16]
print(torch.backends.cpu.get_cpu_capability(), digest, f"{loss.item():.10f}")
"""

SETTINGS = [{}, {"ONEDNN_MAX_CPU_ISA": "SSE41"}, {"ONEDNN_MAX_CPU_ISA": "AVX"}, {"ATEN_CPU_CAPABILITY": "default"},
            {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}]

if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    for extra in SETTINGS:
        out = subprocess.run([sys.executable, "-c", STEPS], env={**os.environ, **extra}, capture_output=True, text=True, check=True)
        print(f"{' '.join(f'{k}={v}' for k, v in extra.items()) or '(defaults)':50} {out.stdout.strip()}")
