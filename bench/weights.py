"""bench/weights.py - weights attached from pinpool against loading them from files (issue 15, item 4).

    python3 bench/weights.py make --socket SOCK --dir DIR [--params 8e9]
    python3 bench/weights.py run  --socket SOCK --dir DIR [--reps 3] [--strategies ...]
                                  [--json OUT.json]
    python3 bench/weights.py hash --socket SOCK [--gib 1] [--threads 1,2] [--json OUT.json]

hash (no GPU needed): the commit of a host manifest of --gib GiB in 64 MiB tensors, without
hashes and with XXH3-64 on each thread count, side by side in one run, and a verify() of it
by a reader: what hashing adds to a publish, in GB/s.

make: a transformers LlamaForCausalLM from a config (Llama-3-8B's shape scaled to --params,
random init with seed 0, bf16, built on GPU 0, nothing downloaded); its state dict saved with
torch.save (DIR/model.pt) and safetensors.torch.save_file (DIR/model.safetensors); published
once with pinpool.weights into the device pool of GPU 0 (manifest "bench-llama") and into the
host pool (manifest "bench-llama-host"); the logits of a fixed prompt saved (DIR/ref_logits.pt).
run: each strategy, --reps times, in a fresh worker process (python3 bench/weights.py worker
...), which imports torch and transformers, starts CUDA and builds the model's skeleton on the
meta device first; then the clock starts and the strategy makes the weights usable and runs the
prompt's forward; the clock stops at the first logits (torch.cuda.synchronize), which must equal
the reference bit for bit:
  pinpool-device        weights.load_into(skeleton, "bench-llama", device=0): the device
                        manifest mapped where it is (no copy)
  pinpool-host-copy     weights.load_into(skeleton, "bench-llama-host", device=0): the host
                        manifest copied by libpinpool to GPU memory of the worker
  torch.load-cold/-warm torch.load(model.pt, map_location="cuda:0", weights_only=True) +
                        load_state_dict(assign=True); cold: the page cache dropped first
                        (sync; /proc/sys/vm/drop_caches as root, else posix_fadvise DONTNEED
                        of the file), warm: the file read once before
  safetensors-cold/-warm safetensors.torch.load_file(model.safetensors, device="cuda:0") +
                        load_state_dict(assign=True), cold and warm as above
Per run: make-usable s (attach or load), forward s, attach-call-to-first-logits s, identical.
Prints a table (median of the reps, with min and max); writes JSON.  The orchestrator
opens no CUDA context (the workers own the GPU).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

GiB = 1 << 30
PROMPT_LEN = 32
NAME_DEV = "bench-llama"
NAME_HOST = "bench-llama-host"
STRATEGIES = ("pinpool-device", "pinpool-host-copy", "torch.load-cold", "torch.load-warm",
              "safetensors-cold", "safetensors-warm")


def llama_config(params):
    """Llama-3-8B's shape (8.03e9 parameters at 32 layers), the layer count scaled so
    that the model has about params parameters (as bench/tms.py)."""
    from transformers import LlamaConfig

    hidden, inter, vocab, heads, kv = 4096, 14336, 128256, 32, 8
    per_layer = hidden * hidden * 2 + 2 * hidden * (hidden * kv // heads) + 3 * hidden * inter + 2 * hidden
    fixed = 2 * vocab * hidden + hidden
    layers = max(1, round((params - fixed) / per_layer))
    return LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                       max_position_embeddings=8192, tie_word_embeddings=False)


def deterministic(torch):
    torch.use_deterministic_algorithms(True, warn_only=True)  # logits compared bit for bit
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def prompt(torch):
    return torch.arange(1, PROMPT_LEN + 1, device="cuda").unsqueeze(0)


def forward(torch, model):
    with torch.no_grad():
        out = model(input_ids=prompt(torch), use_cache=False).logits
    torch.cuda.synchronize()
    return out


# ---- make -----------------------------------------------------------------------------------

def make(args):
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from pinpool import weights

    deterministic(torch)
    os.makedirs(args.dir, exist_ok=True)
    config = llama_config(args.params)
    out = {"params_asked": args.params, "layers": config.num_hidden_layers}
    t = time.perf_counter()
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    model.eval()
    torch.cuda.synchronize()
    out["init_s"] = time.perf_counter() - t
    sd = model.state_dict()
    out["params"] = sum(v.numel() for v in sd.values())
    out["bytes"] = sum(v.numel() * v.element_size() for v in sd.values())
    out["tensors"] = len(sd)
    torch.save(forward(torch, model).cpu(), os.path.join(args.dir, "ref_logits.pt"))
    json.dump(config.to_dict(), open(os.path.join(args.dir, "config.json"), "w"))

    t = time.perf_counter()
    torch.save(sd, os.path.join(args.dir, "model.pt"))
    os.sync()
    out["torch_save_s"] = time.perf_counter() - t
    t = time.perf_counter()
    save_file(sd, os.path.join(args.dir, "model.safetensors"))
    os.sync()
    out["safetensors_save_s"] = time.perf_counter() - t

    for name, dev in ((NAME_DEV, 0), (NAME_HOST, None)):
        try:
            weights.drop(name, force=True, socket=args.socket)  # a previous run's
        except Exception:
            pass
        t = time.perf_counter()
        v = weights.publish(name, model, device=dev, socket=args.socket,
                            metadata={"config": config.to_dict()})
        out[f"publish_{'device' if dev == 0 else 'host'}_s"] = time.perf_counter() - t
        out[f"version_{name}"] = v
    info = weights.info(NAME_DEV, socket=args.socket)
    out["manifest_bytes"] = info["manifest_bytes"]
    out["content_hash"] = f"{info['content_hash']:016x}"
    assert weights.info(NAME_HOST, socket=args.socket)["content_hash"] == info["content_hash"]
    json.dump(out, open(os.path.join(args.dir, "make.json"), "w"), indent=1)
    print(json.dumps(out, indent=1))


# ---- the worker -------------------------------------------------------------------------------

def skeleton(torch, config):
    """The model on the meta device (no memory), with its non-persistent buffers (the
    rotary embedding's inv_freq, in no state dict) made on GPU 0."""
    from transformers import LlamaForCausalLM
    from transformers.models.llama import modeling_llama

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    for parent in list(model.modules()):
        for cname, child in list(parent.named_children()):
            if isinstance(child, modeling_llama.LlamaRotaryEmbedding):
                setattr(parent, cname, modeling_llama.LlamaRotaryEmbedding(config=config,
                                                                           device="cuda"))
    return model.eval()


def meta_left(model):
    return [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]


def worker(args):
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    t_start = time.perf_counter()
    import torch
    from transformers import LlamaConfig

    from pinpool import weights

    deterministic(torch)
    config = LlamaConfig.from_dict(json.load(open(os.path.join(args.dir, "config.json"))))
    torch.empty(1, device="cuda")  # CUDA started before the clock
    model = skeleton(torch, config)
    ref = torch.load(os.path.join(args.dir, "ref_logits.pt")).cuda()
    free0 = torch.cuda.mem_get_info()[0]
    s = args.strategy
    keep = None
    t0 = time.perf_counter()
    if s.startswith("pinpool"):
        keep = weights.load_into(model, NAME_DEV if s == "pinpool-device" else NAME_HOST, device=0,
                                 socket=args.socket)
    elif s.startswith("torch.load"):
        sd = torch.load(os.path.join(args.dir, "model.pt"), map_location="cuda:0", weights_only=True)
        model.load_state_dict(sd, assign=True, strict=True)
        del sd
    else:
        from safetensors.torch import load_file

        sd = load_file(os.path.join(args.dir, "model.safetensors"), device="cuda:0")
        model.load_state_dict(sd, assign=True, strict=True)
        del sd
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    out = forward(torch, model)
    t2 = time.perf_counter()
    left = meta_left(model)
    res = {"strategy": s, "usable_s": t1 - t0, "forward_s": t2 - t1, "total_s": t2 - t0,
           "process_to_logits_s": t2 - t_start, "identical": bool(torch.equal(out, ref)),
           "max_abs_diff": float((out.float() - ref.float()).abs().max()),
           "gpu_bytes_taken": free0 - torch.cuda.mem_get_info()[0], "meta_left": left[:3]}
    if keep is not None:
        res["version"] = keep.version
        res["zero_copy"] = s == "pinpool-device"
    print(json.dumps(res), flush=True)


# ---- hash: what hashing costs a publish (CPU only) -------------------------------------------

def hash_bench(args):
    import numpy as np

    from pinpool import weights

    n = max(1, int(args.gib * GiB) // (64 << 20))
    layout = {f"t{i}": ((64 << 20,), "U8") for i in range(n)}
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, 64 << 20, dtype=np.uint8)
    rows = []
    for threads in [None] + [int(t) for t in args.threads.split(",")]:
        b = weights.builder("bench-hash", layout, device=None, socket=args.socket,
                            hash=threads is not None, hash_threads=threads or 0)
        for i in range(n):
            b[f"t{i}"][...] = block
            block[i % len(block)] ^= 1
        t = time.perf_counter()
        v = b.commit()
        dt = time.perf_counter() - t
        row = {"hash": "none" if threads is None else f"xxh3-64, {threads} thread(s)",
               "commit_s": dt, "gb_per_s": n * (64 << 20) / dt / 1e9, "version": v}
        if threads is not None:
            w = weights.attach("bench-hash", device=None, socket=args.socket)
            t = time.perf_counter()
            w.verify()
            row["verify_s"] = time.perf_counter() - t
            w.close()
        rows.append(row)
        weights.drop("bench-hash", socket=args.socket)
    print(f"commit of a host manifest of {n * 64} MiB ({n} tensors of 64 MiB):")
    for r in rows:
        extra = f", a reader's verify {r['verify_s']:.3f} s" if "verify_s" in r else ""
        print(f"  {r['hash']:<24} commit {r['commit_s']:.3f} s ({r['gb_per_s']:.2f} GB/s){extra}")
    if args.json:
        json.dump({"bench": "weights-hash", "mib": n * 64, "rows": rows}, open(args.json, "w"), indent=1)
    return 0


# ---- the orchestrator (no CUDA here) ---------------------------------------------------------

def drop_cache(path):
    """Drop the page cache (root), or at least the file's pages."""
    os.sync()
    how = "posix_fadvise"
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        how = "drop_caches"
    except OSError:
        pass
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return how


def warm(path):
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def run(args):
    strategies = [s for s in args.strategies.split(",") if s]
    for s in strategies:
        if s not in STRATEGIES:
            sys.exit(f"unknown strategy {s}: {', '.join(STRATEGIES)}")
    made = json.load(open(os.path.join(args.dir, "make.json")))
    rows, runs = [], []
    for s in strategies:
        for rep in range(args.reps):
            f = os.path.join(args.dir, "model.pt" if s.startswith("torch") else "model.safetensors")
            cache = None
            if s.endswith("-cold"):
                cache = drop_cache(f)
            elif s.endswith("-warm"):
                warm(f)
            elif s.startswith("pinpool"):
                cache = "n/a"
            r = subprocess.run([sys.executable, os.path.abspath(__file__), "worker", "--strategy", s,
                                "--socket", args.socket, "--dir", args.dir],
                               capture_output=True, text=True, timeout=900)
            line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
            if r.returncode != 0 or not line:
                print(f"{s} rep {rep}: worker failed (rc {r.returncode}):\n{r.stdout}\n{r.stderr}",
                      flush=True)
                runs.append({"strategy": s, "rep": rep, "failed": True, "stderr": r.stderr[-2000:]})
                continue
            res = json.loads(line[-1])
            res.update(rep=rep, cache=cache)
            runs.append(res)
            print(f"  {s:<20} rep {rep}: usable {res['usable_s']:.3f} s, forward "
                  f"{res['forward_s']:.3f} s, to first logits {res['total_s']:.3f} s, identical "
                  f"{res['identical']}", flush=True)
    for s in strategies:
        ok = [r for r in runs if r["strategy"] == s and not r.get("failed")]
        if not ok:
            rows.append({"strategy": s, "failed": True})
            continue
        tot = [r["total_s"] for r in ok]
        rows.append({"strategy": s, "runs": len(ok), "median_s": statistics.median(tot),
                     "min_s": min(tot), "max_s": max(tot),
                     "usable_median_s": statistics.median(r["usable_s"] for r in ok),
                     "forward_median_s": statistics.median(r["forward_s"] for r in ok),
                     "identical": all(r["identical"] for r in ok)})
    base = next((r["median_s"] for r in rows if r["strategy"] == "safetensors-warm" and "median_s" in r),
                None)
    print(f"\nmodel: {made['params'] / 1e9:.2f} B parameters, {made['bytes'] / GiB:.2f} GiB bf16, "
          f"{made['tensors']} tensors, {made['layers']} layers; publish: device "
          f"{made['publish_device_s']:.2f} s, host {made['publish_host_s']:.2f} s; manifest "
          f"{made['manifest_bytes']} bytes")
    print(f"{'strategy':<20} {'runs':>4} {'attach→logits median':>21} {'min':>8} {'max':>8} "
          f"{'usable':>8} {'forward':>8} {'vs safetensors-warm':>20} {'identical':>9}")
    for r in rows:
        if r.get("failed"):
            print(f"{r['strategy']:<20} failed")
            continue
        ratio = f"{base / r['median_s']:.1f}x faster" if base else "-"
        print(f"{r['strategy']:<20} {r['runs']:>4} {r['median_s']:>19.3f} s {r['min_s']:>7.3f}s "
              f"{r['max_s']:>7.3f}s {r['usable_median_s']:>7.3f}s {r['forward_median_s']:>7.3f}s "
              f"{ratio:>20} {'yes' if r['identical'] else 'NO':>9}")
    doc = {"bench": "weights", "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
           "make": made, "rows": rows, "runs": runs}
    if args.json:
        json.dump(doc, open(args.json, "w"), indent=1)
        print(f"wrote {args.json}")
    return 0 if all(r.get("identical") for r in rows) else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("make", "run", "worker", "hash"):
        q = sub.add_parser(name)
        q.add_argument("--socket", required=True)
        if name == "hash":
            q.add_argument("--gib", type=float, default=1.0)
            q.add_argument("--threads", default="1,2")
            q.add_argument("--json")
            continue
        q.add_argument("--dir", required=True)
        if name == "make":
            q.add_argument("--params", type=float, default=8e9)
        if name == "run":
            q.add_argument("--reps", type=int, default=3)
            q.add_argument("--strategies", default=",".join(STRATEGIES))
            q.add_argument("--json")
        if name == "worker":
            q.add_argument("--strategy", required=True, choices=STRATEGIES)
    args = p.parse_args()
    if args.cmd == "make":
        make(args)
    elif args.cmd == "worker":
        worker(args)
    elif args.cmd == "hash":
        sys.exit(hash_bench(args))
    else:
        sys.exit(run(args))


if __name__ == "__main__":
    main()
