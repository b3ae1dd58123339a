"""tests/gpu/test_torch.py BINDIR - the Python package with torch on a GPU.

Starts `pinpool serve` (vmm backend, a device pool) from BINDIR and checks:
  * ServerPinnedMemoryPool(dtype=torch.bfloat16): alloc_same_pin_tensor gives a
    bf16 tensor of the same shape; .to('cuda', non_blocking=True) is byte-exact;
  * a device slice through __cuda_array_interface__ (Slice.as_tensor) is usable
    by torch on the GPU and its bytes survive into a second process;
  * bandwidth of .to('cuda', non_blocking=True) from a pinpool tensor vs a
    torch.empty(..., pin_memory=True) tensor, interleaved in one run.
Prints "N passed, N failed" last; exit 1 on any failure.
"""
import os
import subprocess
import sys
import tempfile
import time

import torch

import pinpool

GiB = 1 << 30
MiB = 1 << 20
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"  {'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def start_daemon(bindir, sock):
    p = subprocess.Popen([os.path.join(bindir, "pinpool"), "serve", "--socket", sock,
                          "--mem-pool-size", "8GiB", "--host-backend", "vmm",
                          "--device-pool-size", "2GiB"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    if not line.startswith("pinpool ready"):
        raise SystemExit(f"daemon did not start: {line!r}")
    print("   ", line.strip())
    return p


def bandwidth(src, reps=10):
    """Median GB/s of src.to('cuda', non_blocking=True) timed with CUDA events."""
    dst = torch.empty_like(src, device="cuda")
    times = []
    for i in range(reps + 2):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src, non_blocking=True)
        b.record()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(a.elapsed_time(b) / 1e3)
    times.sort()
    return src.numel() * src.element_size() / times[len(times) // 2] / 1e9


def main():
    bindir = sys.argv[1] if len(sys.argv) > 1 else "build"
    tmp = tempfile.mkdtemp(prefix="pinpool-torch-")
    sock = os.path.join(tmp, "pinpool.sock")
    daemon = start_daemon(bindir, sock)
    try:
        torch.cuda.init()
        print(f"    torch {torch.__version__}, {torch.cuda.get_device_name(0)}")

        # The drop-in pool, bf16.
        pool = pinpool.ServerPinnedMemoryPool(dtype=torch.bfloat16, pool_size=4, socket=sock)
        ref = torch.randn(4096, 8192, dtype=torch.bfloat16)
        t = pool.alloc_same_pin_tensor(ref)
        check("alloc_same_pin_tensor: bf16, same shape",
              t.dtype == torch.bfloat16 and tuple(t.shape) == tuple(ref.shape),
              f"{t.dtype} {tuple(t.shape)}")
        t.copy_(ref)
        g = t.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        check(".to('cuda', non_blocking=True) is byte-exact", torch.equal(g.cpu(), ref))
        back = pool.alloc_same_pin_tensor(ref)
        back.copy_(g * 2, non_blocking=True)
        torch.cuda.synchronize()
        check("D2H into a pool tensor is byte-exact", torch.equal(back, (g * 2).cpu()))
        pool.free(t)
        pool.free(back)

        # Bandwidth: pinpool tensor vs torch pinned tensor, 1 GiB, interleaved rounds.
        n = GiB // 2
        p = pool.alloc(GiB)
        p.view(torch.uint8).fill_(1)
        pinned = torch.empty(n, dtype=torch.bfloat16, pin_memory=True)
        pinned.view(torch.uint8).fill_(1)
        bw_pool, bw_pinned = [], []
        for _ in range(3):
            bw_pool.append(bandwidth(p))
            bw_pinned.append(bandwidth(pinned))
        bp, bt = sorted(bw_pool)[1], sorted(bw_pinned)[1]
        print(f"    H2D 1 GiB bf16 .to('cuda', non_blocking=True): pinpool {bp:.2f} GB/s, "
              f"torch pinned {bt:.2f} GB/s, ratio {100 * bp / bt:.1f}%")
        check("pinpool tensor copies at >= 98% of a torch pinned tensor", bp >= 0.98 * bt,
              f"{100 * bp / bt:.1f}%")
        pool.free(p)
        pool.close()

        # A device slice through __cuda_array_interface__, kept for a second process.
        with pinpool.Client(sock) as c:
            s = c.alloc(64 * MiB, device_id=0, tag="torch-weights", flags=pinpool.ALLOC_KEEP)
            w = s.as_tensor(torch.float32)
            check("device slice as a CUDA tensor", w.is_cuda and w.numel() == 16 * MiB)
            w.copy_(torch.arange(w.numel(), device="cuda", dtype=torch.float32))
            torch.cuda.synchronize()
        code = ("import sys, torch, pinpool\n"
                f"c = pinpool.Client({sock!r})\n"
                "s = c.attach('torch-weights')\n"
                "w = s.as_tensor(torch.float32)\n"
                "ok = torch.equal(w, torch.arange(w.numel(), device='cuda', dtype=torch.float32))\n"
                "c.free(s)\n"
                "sys.exit(0 if ok else 1)\n")
        r = subprocess.run([sys.executable, "-c", code], env=os.environ)
        check("a new process re-attaches the device slice; bytes intact", r.returncode == 0)
        with pinpool.Client(sock) as c:
            used = c.info()["devices"][0]["used_bytes"]
        check("device pool back to 0 bytes used", used == 0, f"{used}")
    finally:
        daemon.terminate()
        rc = daemon.wait(timeout=20)
        check("daemon exits 0 on SIGTERM", rc == 0, f"exit {rc}")
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
