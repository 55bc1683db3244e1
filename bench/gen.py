#!/usr/bin/env python3
"""Helper of bench/engine.sh: writes the benchmark pipelines and formats the results table.

    gen.py pipeline SHAPE N DIR   write DIR/pipeline.yaml (nearby) and DIR/Snakefile
    gen.py table RAW.tsv OUT.md   medians of the raw measurements -> markdown table (stdout + OUT.md)

Shapes (nearby YAML on the left, Snakefile on the right):

  fanout   `foreach: {range: N}` noop, no outputs: the engine's in-process floor (inline on the
           scheduler thread). No gather is possible: a gather needs an output to read, and the
           format has no output-less ordering edge.
           Snakemake: a wildcard rule with no action and a `touch()` flag output (Snakemake needs
           an output file to tell N jobs apart and to know they are done).
  gather   the same fan-out, but each instance declares an output (one small file written, fsynced
           and hashed per instance) + one gather task reading all N outputs.
           Snakemake: no-action rule + `touch()` flag output per instance, and a gather rule.
  chain    N noop *tasks* (not a fan-out), each reading the previous one's output: every link
           costs a file write (nearby's noop writes its outputs; the format has no ordering edge
           without an output, so there is no output-less chain).
           Snakemake: ONE wildcard rule whose input function names the previous link (the
           idiomatic and cheapest way; N separate rules would only make Snakemake slower).
  command  `foreach: {range: N}` of `uses: command` running `true` (fork+exec), no outputs.
           Snakemake: `shell: "true"` with a `touch()` flag output (Snakemake's shell runs bash,
           which then execs `true`).

Why a rule with no action (no run/shell/script) + a `touch()` output: Snakemake runs such a
"norun" job on a thread of its own process and then touches the output itself, so this is the
cheapest real no-op Snakemake supports. NOT `run: pass`: since Snakemake 8 the local executor
spawns a new Python process per `run:` job, which re-reads the Snakefile (about 1-2 s per job
here: 50 jobs took 100 s). Snakemake still writes its metadata per output under .snakemake/, as
nearby records each instance in its sled store.
"""

import os
import statistics
import sys
from collections import defaultdict

SHAPES = ("fanout", "gather", "chain", "command")


def nearby_yaml(shape: str, n: int) -> str:
    out = [f"name: bench-{shape}-{n}", f"description: engine benchmark, {shape} of {n}", "tasks:"]
    if shape == "fanout":
        out += ["  fan:", "    uses: noop", f"    foreach: {{range: {n}}}"]
    elif shape == "gather":
        out += [
            "  fan:",
            "    uses: noop",
            f"    foreach: {{range: {n}}}",
            "    outputs: {o: o.txt}",
            "  gather:",
            "    uses: noop",
            "    inputs: {all: fan.o}",
            "    outputs: {o: all.txt}",
        ]
    elif shape == "chain":
        for i in range(n):
            out += [f"  t{i}:", "    uses: noop"]
            if i > 0:
                out.append(f"    inputs: {{prev: t{i - 1}.o}}")
            out.append("    outputs: {o: o.txt}")
    elif shape == "command":
        out += [
            "  cmd:",
            "    uses: command",
            f"    foreach: {{range: {n}}}",
            "    with: {argv: [\"true\"]}",
        ]
    else:
        raise SystemExit(f"unknown shape {shape}")
    return "\n".join(out) + "\n"


def snakefile(shape: str, n: int) -> str:
    if shape == "fanout":
        return f"""\
rule all:
    input: expand("fan/{{i}}.done", i=range({n}))

rule fan:
    output: touch("fan/{{i}}.done")
"""
    if shape == "gather":
        return f"""\
rule all:
    input: "all.txt"

rule fan:
    output: touch("fan/{{i}}.txt")

rule gather:
    input: expand("fan/{{i}}.txt", i=range({n}))
    output: touch("all.txt")
"""
    if shape == "chain":
        # Snakemake resolves the DAG recursively: a deep chain needs a deep Python stack.
        return f"""\
import sys
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20 * {n} + 1000))

wildcard_constraints:
    i = r"\\d+"

rule all:
    input: "chain/{n - 1}.txt"

def previous(wc):
    i = int(wc.i)
    return [] if i == 0 else [f"chain/{{i - 1}}.txt"]

rule link:
    input: previous
    output: touch("chain/{{i}}.txt")
"""
    if shape == "command":
        return f"""\
rule all:
    input: expand("cmd/{{i}}.done", i=range({n}))

rule cmd:
    output: touch("cmd/{{i}}.done")
    shell: "true"
"""
    raise SystemExit(f"unknown shape {shape}")


def pipeline(shape: str, n: str, d: str) -> None:
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "pipeline.yaml"), "w") as f:
        f.write(nearby_yaml(shape, int(n)))
    with open(os.path.join(d, "Snakefile"), "w") as f:
        f.write(snakefile(shape, int(n)))


# ---- the table ----

def fmt_s(x):
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def table(raw: str, out_md: str) -> None:
    """RAW rows: tool shape n phase rep wall_s rss_kb status (tab-separated)."""
    vals = defaultdict(list)  # (tool, shape, n, phase) -> [(wall, rss)]
    bad = defaultdict(set)
    meta = []
    with open(raw) as f:
        for line in f:
            if line.startswith("#"):
                meta.append(line[1:].strip())
                continue
            tool, shape, n, phase, _rep, wall, rss, status = line.rstrip("\n").split("\t")
            key = (tool, shape, int(n), phase)
            if status == "ok":
                vals[key].append((float(wall), int(rss)))
            else:
                bad[key].add(status)

    def med(tool, shape, n, phase, i=0):
        v = vals.get((tool, shape, n, phase))
        if not v:
            return None
        return statistics.median(x[i] for x in v)

    def note(tool, shape, n, phase):
        b = bad.get((tool, shape, n, phase))
        return "/".join(sorted(b)) if b else None

    rows = sorted({(s, n) for (t, s, n, p) in vals if t == "nearby" and n > 1}
                  | {(s, n) for (t, s, n, p) in bad if t == "nearby" and n > 1},
                  key=lambda r: (SHAPES.index(r[0]) if r[0] in SHAPES else 99, r[1]))
    head = ["shape", "N", "plan s", "run s", "nothing-to-do s", "us/task (run/N)",
            "us/task (marginal)", "peak RSS MB", "B/task (RSS)", "nothing-to-do RSS MB",
            "B/task (ntd RSS)", "Snakemake run s", "Snakemake nothing-to-do s", "ratio run SM/nb", "ratio ntd SM/nb"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for shape, n in rows:
        plan = med("nearby", shape, n, "plan")
        run = med("nearby", shape, n, "run")
        ntd = med("nearby", shape, n, "ntd")
        rss = med("nearby", shape, n, "run", 1)
        ntd_rss = med("nearby", shape, n, "ntd", 1)
        base = med("nearby", shape, 1, "run")
        base_rss = med("nearby", shape, 1, "run", 1)
        base_ntd_rss = med("nearby", shape, 1, "ntd", 1)
        per = run / n * 1e6 if run is not None else None
        marg = (run - base) / (n - 1) * 1e6 if run is not None and base is not None else None
        per_b = (rss - base_rss) * 1024 / (n - 1) if rss is not None and base_rss is not None else None
        per_b_ntd = ((ntd_rss - base_ntd_rss) * 1024 / (n - 1)
                     if ntd_rss is not None and base_ntd_rss is not None else None)
        sm_run = med("snakemake", shape, n, "run")
        sm_ntd = med("snakemake", shape, n, "ntd")
        sm_note = note("snakemake", shape, n, "run")
        r_run = fmt(sm_run / run if sm_run and run else None, ".1f")
        r_ntd = fmt(sm_ntd / ntd if sm_ntd and ntd else None, ".1f")
        if sm_run is None and sm_note and sm_note.startswith("timeout>") and run:
            # Snakemake did not finish: the ratio is at least the time limit / nearby's time.
            limit = float(sm_note[len("timeout>"):].rstrip("s"))
            r_run = f"> {limit / run:.0f}"
        cells = [
            shape, str(n),
            fmt_s(plan) if plan is not None else (note("nearby", shape, n, "plan") or "-"),
            fmt_s(run) if run is not None else (note("nearby", shape, n, "run") or "-"),
            fmt_s(ntd) if ntd is not None else (note("nearby", shape, n, "ntd") or "-"),
            fmt(per, ".1f"), fmt(marg, ".1f"),
            fmt(rss / 1024 if rss is not None else None, ".1f"), fmt(per_b, ".0f"),
            fmt(ntd_rss / 1024 if ntd_rss is not None else None, ".1f"), fmt(per_b_ntd, ".0f"),
            fmt_s(sm_run) if sm_run is not None else (sm_note or "not run"),
            fmt_s(sm_ntd) if sm_ntd is not None else (note("snakemake", shape, n, "ntd") or "not run"),
            r_run, r_ntd,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    legend = """
Medians of the repetitions. plan = `nearby plan` on an empty workdir (stdout discarded); run = first
`nearby run -q`, on another empty workdir (it parses and compiles the YAML); nothing-to-do = the second, identical run (all cache hits); each is a whole process,
start-up included. us/task (run/N) = run s / N; us/task (marginal) = (run(N) - run(1)) / (N - 1),
i.e. without process start-up. B/task (RSS) = (peak RSS of the N run - peak RSS of a 1-task run of
the same shape) / (N - 1); B/task (ntd RSS) the same for the nothing-to-do runs. Snakemake: first `snakemake --cores J` and the second, "Nothing to be
done" run; ratio = Snakemake s / nearby s (> 1: nearby is faster; "> x" where Snakemake hit the
per-command time limit). `fanout` and `command` have no
per-instance output in nearby; Snakemake needs one (a `touch()` flag file) in every shape.
`gather` and `chain` write, fsync and hash one small output file per nearby instance (the format
has no ordering edge without an output, so there is no output-less chain to measure).
"""
    text = "\n".join(lines) + "\n" + legend
    if meta:
        text = "\n".join(f"- {m}" for m in meta) + "\n\n" + text
    print(text)
    with open(out_md, "w") as f:
        f.write("# nearby engine benchmark\n\n" + text)


def main(argv):
    if len(argv) >= 2 and argv[1] == "pipeline" and len(argv) == 5:
        pipeline(argv[2], argv[3], argv[4])
    elif len(argv) >= 2 and argv[1] == "table" and len(argv) == 4:
        table(argv[2], argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
