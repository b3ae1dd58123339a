"""tests/gpu/test_tms.py BINDIR - pinpool.torch_memory_saver with real torch on a GPU.

Starts `pinpool serve` (vmm host backend, a file spill tier) from BINDIR and
checks each behaviour of torch_memory_saver 0.0.10 that pinpool keeps, with the
addresses (data_ptr) and every byte checked, and GPU memory given back measured
with cudaMemGetInfo:
  region + pause/resume with a CPU backup, without backup, with a disk backup;
  several tags, pause/resume of one and of all; nested regions; disable();
  tensors outside any region untouched; get_cpu_backup (copy and zero_copy);
  retain_cpu_backup; memory_margin_bytes; torch's free reaching
  pinpool_tms_free (a pool destroyed); a CUDA graph captured in cuda_graph()
  replayed after pause/resume of its weights and of its own memory;
and beyond the original: a new process resumes a tag another one paused;
`pinpool info` / Client.swap_usage() show the copy by tag; the first pause
adds no pinned memory to the process (its RSS).
Prints "N passed, N failed" last; exit 1 on any failure.
"""
import os
import subprocess
import sys
import tempfile
import textwrap

import torch

import pinpool
from pinpool.torch_memory_saver import torch_memory_saver as tms

MiB = 1 << 20
GiB = 1 << 30
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"  {'PASS' if ok else 'FAIL'} {name}{': ' + str(detail) if detail else ''}", flush=True)


def free_bytes():
    torch.cuda.synchronize()
    return torch.cuda.mem_get_info()[0]


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pattern(n, seed, dtype=torch.bfloat16):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(n, generator=g, device="cuda", dtype=torch.float32).to(dtype)


CHILD = textwrap.dedent("""
    import sys, torch
    from pinpool.torch_memory_saver import torch_memory_saver as tms
    tms.socket, mode = sys.argv[1], sys.argv[2]
    with tms.region(tag="worker", enable_cpu_backup=True):
        ts = [torch.empty(n, dtype=torch.bfloat16, device="cuda") for n in (1 << 20, 3 << 28, 12345)]
    refs = [torch.randn(t.numel(), generator=torch.Generator(device="cuda").manual_seed(i),
                        device="cuda").to(torch.bfloat16) for i, t in enumerate(ts)]
    if mode == "pause":
        for t, r in zip(ts, refs):
            t.copy_(r)
        torch.cuda.synchronize()
        tms.pause("worker")
        print("paused", flush=True)
        sys.exit(0)
    for t in ts:
        t.fill_(0)
    tms.resume("worker")
    ok = all(torch.equal(t, r) for t, r in zip(ts, refs))
    print("resumed", "equal" if ok else "DIFFERENT", flush=True)
    sys.exit(0 if ok else 1)
""")


def main():
    bindir = sys.argv[1] if len(sys.argv) > 1 else "build"
    tmp = tempfile.mkdtemp(prefix="pinpool-tms-")
    sock = os.path.join(tmp, "pinpool.sock")
    daemon = subprocess.Popen([os.path.join(bindir, "pinpool"), "serve", "--socket", sock,
                               "--mem-pool-size", "24GiB", "--host-backend", "vmm", "--chunk-size", "1GiB",
                               "--spill-tier", f"file://{tmp}/spill"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = daemon.stdout.readline()
    if not line.startswith("pinpool ready"):
        raise SystemExit(f"daemon did not start: {line!r}")
    print("   ", line.strip(), f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    tms.socket = sock
    try:
        run(sock, bindir)
    finally:
        daemon.terminate()
        rc = daemon.wait(timeout=60)
        check("daemon exits 0 on SIGTERM", rc == 0, f"exit {rc}")
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


def run(sock, bindir):
    n = 1 << 30  # 2 GiB of bf16
    outside = pattern(64 * MiB, 99)
    outside_ref = outside.clone()
    with tms.region(tag="weights", enable_cpu_backup=True):
        w = pattern(n, 1)
    ref = w.clone()
    ptr = w.data_ptr()
    before = free_bytes()
    rss0 = rss()
    tms.pause("weights")
    freed = free_bytes() - before
    check("CPU backup: pause gives the GPU memory back", freed >= n * 2 - 64 * MiB, f"{freed / GiB:.2f} GiB")
    check("the first pause pins nothing in the process (RSS grows < 64 MiB for a 2 GiB copy)",
          rss() - rss0 < 64 * MiB, f"{(rss() - rss0) / MiB:.1f} MiB")
    with pinpool.Client(sock) as c:
        kept = c.swap_usage()
    check("the copy is in the daemon under its tag", kept.get("weights", 0) >= n * 2, kept)
    cpu = tms.get_cpu_backup(w)
    check("get_cpu_backup while paused: the bytes, dtype and shape",
          cpu is not None and cpu.dtype == w.dtype and cpu.shape == w.shape and torch.equal(cpu, ref.cpu()))
    zc = tms.get_cpu_backup(w[:1024], zero_copy=True)
    check("get_cpu_backup(zero_copy=True) of a slice", zc is not None and torch.equal(zc, ref[:1024].cpu()))
    check("outside a region: untouched by pause", torch.equal(outside, outside_ref))
    tms.resume("weights")
    after = free_bytes()  # before torch.equal, whose result torch's cache keeps
    check("resume: same address, every byte back", w.data_ptr() == ptr and torch.equal(w, ref))
    check("resume maps the memory again", before - after < 64 * MiB, f"{(before - after) / MiB:.1f} MiB")
    check("get_cpu_backup when resident and not retained: None", tms.get_cpu_backup(w) is None)

    with tms.region(tag="kv"):
        kv = torch.ones(512 * MiB, dtype=torch.uint8, device="cuda")
    kptr = kv.data_ptr()
    b0 = free_bytes()
    tms.pause("kv")
    check("no backup: pause gives the memory back", free_bytes() - b0 >= 500 * MiB)
    check("pause(tag) leaves other tags usable", float(w[:16].float().sum()) == float(ref[:16].float().sum()))
    tms.resume("kv")
    kv.fill_(3)
    torch.cuda.synchronize()
    check("no backup: resume maps at the same address, writable", kv.data_ptr() == kptr and int(kv[-1]) == 3)

    with tms.region(tag="opt", enable_disk_backup=True):
        o = pattern(64 * MiB, 3)
    oref = o.clone()
    tms.pause("opt")
    with pinpool.Client(sock) as c:
        released = c.exists("swap:opt~disk")
    check("disk backup: released to the daemon (spillable)", released)
    check("disk backup: get_cpu_backup is None", tms.get_cpu_backup(o) is None)
    tms.resume("opt")
    check("disk backup: bytes back", torch.equal(o, oref))

    with tms.region(tag="outer", enable_cpu_backup=True):
        a = pattern(MiB, 4)
        with tms.region(tag="inner"):
            i = torch.zeros(MiB, device="cuda")
            with tms.disable():
                plain = pattern(MiB, 5)
        b = pattern(MiB, 6)
    check("nested regions: allocations by tag",
          tms.usage("outer")["allocations"] >= 1 and tms.usage("inner")["allocations"] >= 1)
    aref, bref, pref = a.clone(), b.clone(), plain.clone()
    tms.pause()
    check("pause(None) pauses every tag", tms.usage()["device_bytes"] == 0, tms.usage())
    check("disable(): its tensor is untouched by pause", torch.equal(plain, pref))
    tms.resume()
    check("resume(None): every backup back", torch.equal(w, ref) and torch.equal(a, aref) and torch.equal(b, bref))
    try:
        tms.resume("outer")
        check("resume of a resident tag raises", False)
    except pinpool.PinpoolError as e:
        check("resume of a resident tag raises", "not paused" in str(e), e)

    tms.retain_cpu_backup = True
    tms.pause("weights")
    tms.resume("weights")
    kept = tms.get_cpu_backup(w)
    check("retain: the backup stays and reads", kept is not None and torch.equal(kept, ref.cpu()))
    tms.retain_cpu_backup = False
    tms.pause("weights")
    tms.resume("weights")
    check("retain off: freed at resume", tms.usage("weights")["host_bytes"] == 0 and torch.equal(w, ref))

    tms.memory_margin_bytes = free_bytes() + GiB
    try:
        with tms.region(tag="margin"):
            torch.empty(256 * MiB, dtype=torch.uint8, device="cuda")
        check("memory_margin_bytes refuses an allocation", False)
    except torch.OutOfMemoryError:
        check("memory_margin_bytes refuses an allocation", True)
    tms.memory_margin_bytes = 0

    # torch's free reaches pinpool_tms_free: a pool of our allocator destroyed
    impl = tms._impl
    with impl.config("freed", 1):
        pool = torch.cuda.MemPool(allocator=impl._allocator.allocator())
        with torch.cuda.use_mem_pool(pool):
            t = torch.empty(256 * MiB, dtype=torch.uint8, device="cuda")
    had = tms.usage("freed")["allocations"]
    del t, pool
    torch.cuda.empty_cache()  # a destroyed pool's segments go back to its allocator here
    torch.cuda.synchronize()
    check("torch freeing a pool's segments frees the VMM allocations", had >= 1 and
          tms.usage("freed")["allocations"] == 0, f"{had} -> {tms.usage('freed')['allocations']}")

    # a CUDA graph captured in cuda_graph(), replayed after pause/resume
    with tms.region(tag="gweights", enable_cpu_backup=True):
        gw = pattern(4096 * 4096, 7).view(4096, 4096)
        x = pattern(4096 * 64, 8).view(64, 4096)
    gref = gw.clone()
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        y = x @ gw  # warm-up outside capture
    torch.cuda.current_stream().wait_stream(s)
    with tms.cuda_graph(g, tag="graph"):
        y = x @ gw
    g.replay()
    torch.cuda.synchronize()
    want = y.clone()
    gptr = (gw.data_ptr(), y.data_ptr())
    tms.pause("gweights")
    tms.pause("graph")
    tms.resume("graph")
    tms.resume("gweights")
    y.zero_()
    g.replay()
    torch.cuda.synchronize()
    check("CUDA graph replay after pause/resume of its weights and its memory: same output",
          (gw.data_ptr(), y.data_ptr()) == gptr and torch.equal(gw, gref) and torch.equal(y, want))

    # a new process resumes what another one paused
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", CHILD, sock, "pause"], env=env, capture_output=True, text=True)
    check("process A pauses tag 'worker' and exits", r.returncode == 0, (r.stdout + r.stderr)[-300:])
    with pinpool.Client(sock) as c:
        kept = c.swap_usage().get("worker", 0)
    info = subprocess.run([os.path.join(bindir, "pinpool"), "info", "--socket", sock], capture_output=True,
                          text=True).stdout
    check("pinpool info shows the copy by tag", kept > 0 and "worker" in info, f"{kept} bytes")
    r = subprocess.run([sys.executable, "-c", CHILD, sock, "resume"], env=env, capture_output=True, text=True)
    check("a new process B resumes tag 'worker' with every byte", r.returncode == 0 and "equal" in r.stdout,
          (r.stdout + r.stderr)[-300:])
    with pinpool.Client(sock) as c:
        check("B's resume freed the copy", "worker" not in c.swap_usage(), c.swap_usage())


if __name__ == "__main__":
    sys.exit(main())
