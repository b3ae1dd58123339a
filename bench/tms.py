"""bench/tms.py - pinpool.torch_memory_saver against the real torch_memory_saver, one run.

    python3 bench/tms.py run --socket SOCK --daemon-pid PID [--params 8e9] [--rounds 4]
                              [--swaps 10] [--parts single,alternate] [--strategies ...]
                              [--json OUT.json] [--png OUT.png]

Each strategy runs in a fresh worker process (python3 bench/tms.py worker ...):
a transformers LlamaForCausalLM built from a config (Llama-3-8B's shape scaled to
--params, random init with seed 0, bf16, nothing downloaded) is created inside
region(tag="model", enable_cpu_backup=True), then paused and resumed --rounds
times; after every resume the logits of a fixed prompt must equal the logits
before the first pause bit for bit.  Per round: pause s, resume s, resume call to
first forward done s, GPU memory given back (cudaMemGetInfo).  Per worker: its peak
RSS (VmHWM) and the daemon's RSS and peak after it.  Strategies:
  tms, tms-retain           torch_memory_saver from PyPI, hook_mode "torch", CPU backup,
                            retain_cpu_backup off / on
  pinpool, pinpool-retain   pinpool.torch_memory_saver, the same calls
Part "alternate": the original's multi-model switch (its README's tags example):
two such models under tags "a" and "b", 10 swaps each way (pause one, resume the
other, forward it, check its logits), per strategy.
Prints a table; writes JSON and a PNG (matplotlib, where it is).
"""
import argparse
import json
import os
import subprocess
import sys
import time

MiB = 1 << 20
GiB = 1 << 30
PROMPT_LEN = 32
STRATEGIES = ("tms", "tms-retain", "pinpool", "pinpool-retain")


# ---- the worker -----------------------------------------------------------------------

def status(pid="self"):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0]) * 1024
    return out


def llama_config(params):
    """Llama-3-8B's shape (8.03e9 parameters at 32 layers), with the layer count
    scaled so that the model has about params parameters."""
    from transformers import LlamaConfig

    hidden, inter, vocab, heads, kv = 4096, 14336, 128256, 32, 8
    per_layer = hidden * hidden * 2 + 2 * hidden * (hidden * kv // heads) + 3 * hidden * inter + 2 * hidden
    fixed = 2 * vocab * hidden + hidden
    layers = max(1, round((params - fixed) / per_layer))
    return LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                       max_position_embeddings=8192, tie_word_embeddings=False)


def make_model(torch, config, saver, tag, seed):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with saver.region(tag=tag, enable_cpu_backup=True):
            with torch.device("cuda"):
                model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    model.eval()
    return model


def logits(torch, model):
    ids = torch.arange(1, PROMPT_LEN + 1, device="cuda").unsqueeze(0)
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=False).logits
    torch.cuda.synchronize()
    return out


def saver_for(strategy):
    if strategy.startswith("tms"):
        from torch_memory_saver import torch_memory_saver as saver
    else:
        from pinpool.torch_memory_saver import torch_memory_saver as saver
        saver.socket = os.environ.get("PINPOOL_SOCKET")
    saver.hook_mode = "torch"
    saver.retain_cpu_backup = strategy.endswith("-retain")
    return saver


def worker(args):
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)  # the logits are compared bit for bit
    saver = saver_for(args.strategy)
    config = llama_config(args.params)
    out = {"strategy": args.strategy, "part": args.part, "rounds": []}
    t0 = time.perf_counter()
    tags = ["model"] if args.part == "single" else ["a", "b"]
    models = {t: make_model(torch, config, saver, t, seed=i) for i, t in enumerate(tags)}
    out["create_s"] = time.perf_counter() - t0
    out["params"] = sum(p.numel() for p in models[tags[0]].parameters())
    out["model_bytes"] = sum(p.numel() * p.element_size() for p in models[tags[0]].parameters())
    out["layers"] = config.num_hidden_layers
    ref = {t: logits(torch, m) for t, m in models.items()}
    ptrs = {t: [p.data_ptr() for p in m.parameters()] for t, m in models.items()}
    ok = True

    def check(t):
        same_addr = [p.data_ptr() for p in models[t].parameters()] == ptrs[t]
        return same_addr and torch.equal(logits(torch, models[t]), ref[t])

    if args.part == "single":
        for r in range(args.rounds):
            free0 = torch.cuda.mem_get_info()[0]
            t = time.perf_counter()
            saver.pause("model")
            pause_s = time.perf_counter() - t
            freed = torch.cuda.mem_get_info()[0] - free0
            rss_paused = status()["VmRSS"]
            t = time.perf_counter()
            saver.resume("model")
            resume_s = time.perf_counter() - t
            same = check("model")
            first_fwd = time.perf_counter() - t
            ok = ok and same
            out["rounds"].append({"pause_s": pause_s, "resume_s": resume_s, "resume_to_forward_s": first_fwd,
                                  "gpu_freed_bytes": freed, "rss_paused": rss_paused, "logits_equal": same})
    else:
        saver.pause("b")
        cur = "a"
        for s in range(2 * args.swaps):
            nxt = "b" if cur == "a" else "a"
            t = time.perf_counter()
            saver.pause(cur)
            pause_s = time.perf_counter() - t
            t = time.perf_counter()
            saver.resume(nxt)
            resume_s = time.perf_counter() - t
            same = check(nxt)
            first_fwd = time.perf_counter() - t
            ok = ok and same
            out["rounds"].append({"from": cur, "to": nxt, "pause_s": pause_s, "resume_s": resume_s,
                                  "resume_to_forward_s": first_fwd, "logits_equal": same})
            cur = nxt
    out["all_logits_equal"] = ok
    st = status()
    out["rss_peak"], out["rss_end"] = st["VmHWM"], st["VmRSS"]
    print("RESULT " + json.dumps(out), flush=True)
    return 0 if ok else 1


# ---- the run ---------------------------------------------------------------------------

def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def run(args):
    rows = []
    for part in args.parts.split(","):
        for strategy in args.strategies.split(","):
            cmd = [sys.executable, os.path.abspath(__file__), "worker", "--strategy", strategy, "--part", part,
                   "--params", str(args.params), "--rounds", str(args.rounds), "--swaps", str(args.swaps)]
            print(f"== {part}: {strategy}", flush=True)
            env = dict(os.environ, PINPOOL_SOCKET=args.socket)
            t = time.perf_counter()
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            res = [line[7:] for line in p.stdout.splitlines() if line.startswith("RESULT ")]
            if p.returncode not in (0, 1) or not res:
                print(f"   worker failed (exit {p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-4000:]}", flush=True)
                rows.append({"strategy": strategy, "part": part, "error": (p.stderr or p.stdout)[-2000:]})
                continue
            row = json.loads(res[-1])
            row["wall_s"] = time.perf_counter() - t
            if args.daemon_pid:
                d = status(args.daemon_pid)
                row["daemon_rss"], row["daemon_rss_peak"] = d["VmRSS"], d["VmHWM"]
            rows.append(row)
            show(row)
    out = {"date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "gpu": gpu_name(), "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")
    table(rows)
    if args.png:
        plot(rows, args.png)
    bad = [r for r in rows if "error" in r or not r.get("all_logits_equal")]
    return 1 if bad else 0


def gpu_name():
    """Without a CUDA context in this process (the workers get the whole GPU)."""
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:  # the table still goes out
        return f"? ({e})"


def show(row):
    rs = row["rounds"]
    print(f"   {row['params'] / 1e9:.2f} B params ({row['model_bytes'] / GiB:.2f} GiB bf16, {row['layers']} layers), "
          f"created in {row['create_s']:.1f} s; logits equal after every resume: {row['all_logits_equal']}")
    for i, r in enumerate(rs):
        freed = f", GPU freed {r['gpu_freed_bytes'] / GiB:.2f} GiB" if "gpu_freed_bytes" in r else ""
        print(f"   {i + 1:2d}: pause {r['pause_s']:.3f} s, resume {r['resume_s']:.3f} s, "
              f"resume->forward {r['resume_to_forward_s']:.3f} s{freed}", flush=True)


def table(rows):
    print("\n| part | strategy | first pause s | first resume s | pause s (later) | resume s (later) | "
          "resume->forward s (later) | GPU freed GiB | peak RSS GiB | daemon RSS GiB (peak) | logits |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['part']} | {r['strategy']} | failed: see the log |||||||||")
            continue
        rs = r["rounds"]
        later = rs[1:] if len(rs) > 1 else rs
        freed = max((x.get("gpu_freed_bytes", 0) for x in rs), default=0) / GiB
        daemon = (f"{r['daemon_rss'] / GiB:.1f} ({r['daemon_rss_peak'] / GiB:.1f})" if "daemon_rss" in r else "-")
        print(f"| {r['part']} | {r['strategy']} | {rs[0]['pause_s']:.3f} | {rs[0]['resume_s']:.3f} | "
              f"{median([x['pause_s'] for x in later]):.3f} | {median([x['resume_s'] for x in later]):.3f} | "
              f"{median([x['resume_to_forward_s'] for x in later]):.3f} | {freed:.2f} | "
              f"{r['rss_peak'] / GiB:.2f} | {daemon} | {'equal' if r['all_logits_equal'] else 'DIFFER'} |")


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"no matplotlib: no {path} (the JSON has every number)")
        return
    ok = [r for r in rows if "error" not in r]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, part in zip(axes, ("single", "alternate")):
        sel = [r for r in ok if r["part"] == part]
        names = [r["strategy"] for r in sel]
        x = range(len(sel))
        first = [r["rounds"][0]["pause_s"] for r in sel]
        pause = [median([y["pause_s"] for y in r["rounds"][1:] or r["rounds"]]) for r in sel]
        resume = [median([y["resume_s"] for y in r["rounds"][1:] or r["rounds"]]) for r in sel]
        fwd = [median([y["resume_to_forward_s"] for y in r["rounds"][1:] or r["rounds"]]) for r in sel]
        w = 0.2
        ax.bar([i - 1.5 * w for i in x], first, w, label="first pause")
        ax.bar([i - 0.5 * w for i in x], pause, w, label="pause (later)")
        ax.bar([i + 0.5 * w for i in x], resume, w, label="resume (later)")
        ax.bar([i + 1.5 * w for i in x], fwd, w, label="resume to first forward (later)")
        ax.set_xticks(list(x))
        ax.set_xticklabels(names)
        ax.set_yscale("log")
        ax.set_ylabel("seconds (median)")
        ax.set_title(f"{part}: {'one model' if part == 'single' else 'two models, swaps'}")
        ax.legend(fontsize=7)
    fig.suptitle("pinpool.torch_memory_saver vs torch_memory_saver 0.0.10, LlamaForCausalLM bf16")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("run", "worker"))
    ap.add_argument("--socket", default=os.environ.get("PINPOOL_SOCKET"))
    ap.add_argument("--daemon-pid", type=int, default=0)
    ap.add_argument("--params", type=float, default=8e9)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--swaps", type=int, default=10)
    ap.add_argument("--parts", default="single,alternate")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--strategy", choices=STRATEGIES)
    ap.add_argument("--part", choices=("single", "alternate"), default="single")
    ap.add_argument("--json")
    ap.add_argument("--png")
    args = ap.parse_args()
    if args.mode == "worker":
        return worker(args)
    for s in args.strategies.split(","):
        if s not in STRATEGIES:
            ap.error(f"unknown strategy {s!r} (of {STRATEGIES})")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
