"""tests/gpu/test_weights.py BINDIR - pinpool.weights (tensor manifests) with real torch on a GPU.

Starts `pinpool serve` from BINDIR (vmm host backend, an 8 GiB device pool on GPU 0, a file
spill tier) and checks, with every byte compared (torch.equal against tensors regenerated from
their seeds in the checking process):
  a device manifest (bf16, fp32, int64, a scalar, tied weights, ~1.6 GiB, one tensor > 1 GiB)
  published by process A, which exits, and attached by process B: CUDA tensors on GPU 0 over
  the daemon's device pool (no copy: GPU memory free before and after the attach within
  64 MiB), every byte equal, verify() passes; a write through B's tensor fails in B (the
  vmm device pool maps readers read-only) and a verify() in process C passes;
  the atomic commit: a publisher D killed before its commit leaves version 1 current for a
  reader E that attaches meanwhile and after; collect() frees D's slices;
  a reader of version 1 keeps its bytes while version 2 is committed; drop(1) is refused
  while it is attached (naming it) and works once it closed;
  a host manifest attached on GPU 0 by a new process (copied at PCIe speed: its GB/s
  printed), every byte equal; a spillable host manifest, spilled by filling the host pool,
  attached on GPU 0 byte-exact;
  load_into a torch module (Linear layers, tied embedding) from a device manifest: no copy
  (data_ptr inside the attached memory), tied parameters stay tied, the forward output
  equal bit for bit to the original module's; a dtype mismatch names the tensor.
Prints "N passed, N failed" last; exit 1 on any failure.  No timing is claimed here
(bench/weights_run measures).
"""
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import torch

import pinpool
from pinpool import weights

MiB = 1 << 20
GiB = 1 << 30
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"  {'PASS' if ok else 'FAIL'} {name}{': ' + str(detail) if detail else ''}", flush=True)


# The tensors of the device manifest, regenerated from their seeds wherever checked.
SPEC = """
import torch
def tensors():
    g = lambda seed: torch.Generator(device="cuda").manual_seed(seed)
    out = {}
    out["embed.weight"] = torch.randn(131072, 4608, generator=g(1), device="cuda").to(torch.bfloat16)  # 1.1 GiB
    out["lm_head.weight"] = out["embed.weight"]                                                          # tied
    for i in range(4):
        out[f"layers.{i}.w"] = torch.randn(4096, 14336, generator=g(10 + i), device="cuda").to(torch.bfloat16)
        out[f"layers.{i}.norm"] = torch.rand(4096, generator=g(20 + i), device="cuda")
    out["ids"] = torch.randint(-2**40, 2**40, (12345,), generator=g(30), device="cuda")
    out["step"] = torch.tensor(7, device="cuda")
    return out
"""

PUBLISH = SPEC + """
import sys
from pinpool import weights
name, dev, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
kw = {"spillable": True} if "spillable" in extra else {}
v = weights.publish(name, tensors(), device=None if dev == "host" else int(dev), socket=sys.argv[-1], **kw)
print("published", v)
"""

ATTACH = SPEC + """
import sys, time, torch
from pinpool import weights
name, sock, mode = sys.argv[1], sys.argv[2], sys.argv[3]
want = tensors()
torch.cuda.synchronize()
free0 = torch.cuda.mem_get_info()[0]
t0 = time.perf_counter()
w = weights.attach(name, device=0, socket=sock)
torch.cuda.synchronize()
dt = time.perf_counter() - t0
taken = free0 - torch.cuda.mem_get_info()[0]
same = all(torch.equal(w[k], v) for k, v in want.items())
on_gpu = all(w[k].is_cuda and w[k].device.index == 0 for k in want)
tied = w["embed.weight"].data_ptr() == w["lm_head.weight"].data_ptr()
if mode != "hold":  # the holder attaches version 1 after the write below: its hash no longer matches
    w.verify()
print(f"attach {dt:.4f} s, {w.info['data_bytes'] / dt / 1e9:.1f} GB/s, GPU memory taken {taken}")
print("same", same, "on_gpu", on_gpu, "tied", tied, "taken", taken, "version", w.version)
if mode == "write":
    w["layers.2.w"][100, 7] += 1          # a write through this reader's tensor
    torch.cuda.synchronize()
    print("wrote")
if mode == "hold":
    print("holding", flush=True)
    sys.stdin.readline()
    same = all(torch.equal(w[k], v) for k, v in want.items())
    print("still", same, "version", w.version, flush=True)
"""

VERIFY = """
import sys
from pinpool import weights
w = weights.attach(sys.argv[1], device=0, socket=sys.argv[2])
try:
    w.verify()
    print("verify passed")
except weights.ManifestError as e:
    print("found:", e)
"""

HALF_PUBLISH = """
import sys, torch
from pinpool import weights
b = weights.builder(sys.argv[1], {"x": ((256 * 1024 * 1024,), "U8")}, device=0, socket=sys.argv[2])
b["x"].fill_(0x33)
torch.cuda.synchronize()
print("ready", b.version, flush=True)
sys.stdin.readline()
b.commit()
"""


def py(code, *args, stdin=None):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, input=stdin, env=dict(os.environ), timeout=600)


def main():
    bindir = sys.argv[1] if len(sys.argv) > 1 else "build"
    tmp = tempfile.mkdtemp(prefix="pinpool-weights-")
    sock = os.path.join(tmp, "pinpool.sock")
    daemon = subprocess.Popen([os.path.join(bindir, "pinpool"), "serve", "--socket", sock,
                               "--mem-pool-size", "8GiB", "--host-backend", "vmm", "--chunk-size", "256MiB",
                               "--devices", "0", "--device-pool-size", "8GiB", "--device-backend", "vmm",
                               "--spill-tier", f"file://{tmp}/spill"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = daemon.stdout.readline()
    if not line.startswith("pinpool ready"):
        raise SystemExit(f"daemon did not start: {line!r}")
    print("   ", line.strip(), f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    try:
        run(sock)
    finally:
        daemon.terminate()
        rc = daemon.wait(timeout=120)
        check("daemon exits 0 on SIGTERM", rc == 0, f"exit {rc}")
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


def run(sock):
    r = py(PUBLISH, "dev", 0, sock)
    check("process A publishes a device manifest on GPU 0 and exits", r.returncode == 0 and "published 1" in r.stdout,
          (r.stdout + r.stderr)[-400:])
    r = py(ATTACH, "dev", sock, "read")
    out = r.stdout
    check("process B attaches it: CUDA tensors on GPU 0, every byte equal, tied weights share memory, verify "
          "passes", r.returncode == 0 and "same True on_gpu True tied True" in out, (out + r.stderr)[-600:])
    taken = int(out.split("taken ")[-1].split()[0]) if "taken " in out else -1
    check("B's attach copies nothing (GPU memory taken < 64 MiB)", taken != -1 and abs(taken) < 64 * MiB,
          f"{taken} bytes; {out.splitlines()[0] if out else ''}")

    r = py(ATTACH, "dev", sock, "write")
    check("a reader's write through its tensor fails in that process (read-only mapping)",
          r.returncode != 0 and "same True" in r.stdout and "wrote" not in r.stdout, (r.stdout + r.stderr)[-300:])
    r = py(VERIFY, "dev", sock)
    check("a verify in another process passes: the bytes are as published", "verify passed" in r.stdout,
          (r.stdout + r.stderr)[-400:])

    # an old reader keeps its version; drop waits for it
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(ATTACH), "dev", sock, "hold"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holding = False
    for line in holder.stdout:
        if line.startswith("holding"):
            holding = True
            break
    if not holding:
        holder.wait()
        check("a reader holds version 1", False, holder.stderr.read()[-600:])
        return
    r = py(PUBLISH, "dev", 0, sock)  # version 2: the same tensors, whole again
    check("version 2 committed while a reader holds version 1", "published 2" in r.stdout, r.stderr[-300:])
    try:
        weights.drop("dev", 1, socket=sock)
        check("drop of version 1 is refused while it is attached", False, "dropped")
    except pinpool.PinpoolError as e:
        check("drop of version 1 is refused while it is attached, naming the reader", "attached by client" in str(e),
              str(e))
    holder.stdin.write("\n")
    holder.stdin.flush()
    rest = holder.stdout.read()
    holder.wait(timeout=120)
    check("the reader of version 1 still sees version 1 after version 2",
          "version 1" in rest, rest[-300:])
    for _ in range(100):  # until the daemon has seen the reader's session end
        try:
            weights.drop("dev", 1, socket=sock)
            break
        except pinpool.PinpoolError:
            time.sleep(0.05)
    check("drop of version 1 once its reader exited", weights.versions("dev", socket=sock)["versions"] == [2])
    r = py(VERIFY, "dev", sock)
    check("version 2 verifies", "verify passed" in r.stdout, (r.stdout + r.stderr)[-300:])

    # the atomic commit
    d = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HALF_PUBLISH), "dev", sock],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = d.stdout.readline()
    check("publisher D has version 3 half made", line.startswith("ready 3"), line)
    r = py(ATTACH, "dev", sock, "read")
    check("reader E during D's publish attaches version 2, whole", "version 2" in r.stdout and "same True" in r.stdout,
          (r.stdout + r.stderr)[-300:])
    d.send_signal(signal.SIGKILL)
    d.wait()
    r = py(ATTACH, "dev", sock, "read")
    check("after D is killed before its commit, version 2 is current", "version 2" in r.stdout, r.stdout[-300:])
    n = 0
    for _ in range(100):
        n = weights.collect("dev", socket=sock)
        if n:
            break
        time.sleep(0.05)
    check("collect frees the dead publisher's version", n == 1, n)
    weights.drop("dev", socket=sock)

    # host manifests copied to the GPU
    r = py(PUBLISH, "host", "host", sock)
    check("a host manifest published", "published 1" in r.stdout, r.stderr[-300:])
    r = py(ATTACH, "host", sock, "read")
    check("a new process attaches the host manifest on GPU 0: copied, every byte equal",
          "same True on_gpu True" in r.stdout, (r.stdout + r.stderr)[-400:])
    print("    " + (r.stdout.splitlines()[0] if r.stdout else ""))
    weights.drop("host", socket=sock)
    r = py(PUBLISH, "cold", "host", "spillable", sock)
    check("a spillable host manifest published", "published 1" in r.stdout, r.stderr[-300:])
    with pinpool.Client(sock) as c:
        fill = []
        try:
            while True:
                fill.append(c.alloc(512 * MiB))
        except pinpool.PinpoolError:
            pass
        spilled = c.info()["spill"]["objects_spilled"]
        for f in fill:
            c.free(f)
    check("filling the host pool spills it", spilled >= 1, spilled)
    r = py(ATTACH, "cold", sock, "read")
    check("attached on GPU 0 after the spill: restored, every byte equal", "same True" in r.stdout,
          (r.stdout + r.stderr)[-400:])
    weights.drop("cold", socket=sock)

    # load_into a module
    torch.manual_seed(0)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(32000, 1024)
            self.l1 = torch.nn.Linear(1024, 4096)
            self.l2 = torch.nn.Linear(4096, 1024)
            self.out = torch.nn.Linear(1024, 32000, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, x):
            return self.out(torch.relu(self.l2(torch.relu(self.l1(self.emb(x))))))

    src = M().to("cuda", torch.bfloat16)
    x = torch.randint(0, 32000, (4, 64), device="cuda")
    with torch.no_grad():
        want = src(x)
    weights.publish("mod", src, device=0, socket=sock)
    dst = M().to("cuda", torch.bfloat16)
    w = weights.load_into(dst, "mod", device=0, socket=sock)
    base = w["emb.weight"].data_ptr()
    with torch.no_grad():
        got = dst(x)
    check("load_into: no copy, tied parameters tied, forward equal bit for bit",
          dst.emb.weight.data_ptr() == base and dst.out.weight is dst.emb.weight and torch.equal(got, want))
    try:
        weights.load_into(M().to("cuda"), "mod", device=0, socket=sock)  # float32
        check("load_into of a float32 module is refused", False)
    except weights.MismatchError as e:
        check("load_into of a float32 module is refused naming the tensor", "BF16 in the manifest" in str(e), str(e))
    del dst, got
    w.close()
    weights.drop("mod", socket=sock)
    with pinpool.Client(sock) as c:
        i = c.info()
        check("the pools are empty at the end", i["used_bytes"] == 0 and all(dv["used_bytes"] == 0 for dv in i["devices"]),
              f"host {i['used_bytes']}, devices {[dv['used_bytes'] for dv in i['devices']]}")


if __name__ == "__main__":
    sys.exit(main())
