"""Where an erasure's iterations spend their time, by kind of operator (not a test).

    python bench/profile_step.py [--model toyworld-sd] [--method esd-x] [--iterations 3]

Runs ``--iterations`` of the method on ``--concept`` under ``torch.profiler`` (the model
loaded first, outside the profile) and sums each aten operator's *self* CPU time into
kinds: convolution, matrix products and attention (the UNet's and text encoder's
arithmetic), normalisation, element-wise and the rest. The question it answers (issue 21's
speed item): how much of an iteration is kernel arithmetic that any implementation of the
same method at the same precision must pay, and how much is overhead a rewrite could save.
Writes ``bench/results/<model>/profile.{md,json}`` (rows merge by method; ToyWorld's in
``bench/results/``).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import torch

from harness import RESULTS, Results, Scenario, Variant, erase, load_model, record, runs_on

#: operator-name patterns per kind, first match wins; self time of anything else is "other"
KINDS: tuple[tuple[str, str], ...] = (
    ("convolution", r"conv|mkldnn_convolution"),
    ("matmul / attention", r"addmm|bmm|\bmm\b|matmul|linear|attention|baddbmm"),
    ("normalisation", r"group_norm|layer_norm|native_group_norm|native_layer_norm"),
    (
        "element-wise",
        r"add|mul|sub|div|silu|gelu|sigmoid|exp|sqrt|rsqrt|pow|neg|copy_|clone|cat|"
        r"softmax|where|fill_|zero_|lerp|addcmul|addcdiv|clamp|randn|normal_",
    ),
)


def kind_of(name: str) -> str:
    """The kind of an aten operator, by its name (``aten::convolution`` -> convolution)."""
    short = name.removeprefix("aten::")
    for kind, pattern in KINDS:
        if re.search(pattern, short):
            return kind
    return "other"


def markdown(results: Results) -> str:
    rows = results["tables"]["profile"]["rows"]
    kinds = [k for k, _ in KINDS] + ["other"]
    lines = [
        f"Self CPU time per operator kind during an erasure on "
        f"`{results['settings']['model']}` ({' / '.join(runs_on(results))}). "
        "Shares of the profiled operators' self time; the last columns are the "
        "profiled wall time and the operators' total.",
        "",
        "| method | iterations | "
        + " | ".join(kinds)
        + " | UNet arithmetic (conv + matmul) | wall s | operator s |",
        "|---|---|" + "---|" * (len(kinds) + 3),
    ]
    for method, r in rows.items():
        share = r["share"]
        lines.append(
            f"| {method} | {r['iterations']} | "
            + " | ".join(f"{100 * share[k]:.1f} %" for k in kinds)
            + f" | {100 * (share['convolution'] + share['matmul / attention']):.1f} % | "
            f"{r['wall_seconds']:.1f} | {r['operator_seconds']:.1f} |"
        )
    for method, r in rows.items():
        lines += ["", f"Top operators of `{method}` (self CPU s):", ""]
        lines += [f"- `{name}`: {s:.2f} ({kind_of(name)})" for name, s in r["top"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toyworld-sd")
    ap.add_argument("--method", default="esd-x")
    ap.add_argument("--concept", default="star")
    ap.add_argument("--iterations", type=int, default=3)
    args = ap.parse_args()
    bundle = load_model(args.model)
    scenario = Scenario(args.concept, (args.concept,), model=args.model)
    with tempfile.TemporaryDirectory() as tmp, torch.profiler.profile() as prof:
        t0 = time.perf_counter()
        erase(scenario, Variant(args.method, args.method), Path(tmp), args.iterations, bundle)
        wall = time.perf_counter() - t0
    seconds: dict[str, float] = {}
    for event in prof.key_averages():
        seconds[event.key] = event.self_cpu_time_total / 1e6
    total = sum(seconds.values())
    share = {k: 0.0 for k, _ in KINDS} | {"other": 0.0}
    for name, s in seconds.items():
        share[kind_of(name)] += s / total
    row = {
        "iterations": args.iterations,
        "share": share,
        "wall_seconds": wall,
        "operator_seconds": total,
        "top": sorted(seconds.items(), key=lambda kv: -kv[1])[:8],
    }
    settings = {"model": args.model, "concept": args.concept}
    results = record(
        "profile",
        settings,
        "profile",
        {args.method: row},
        markdown,
        out=RESULTS / args.model if args.model != "toyworld" else RESULTS,
    )
    print(markdown(results))


if __name__ == "__main__":
    main()
