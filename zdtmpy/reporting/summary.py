"""`zdtmpy report`: the mode x compression table of a run, and what changed against another."""

from __future__ import annotations

from dataclasses import dataclass

from .records import Report

COLUMNS = ("passed", "failed", "skipped")
BAD = ("failed", "error")


def _column(outcome: str) -> str:
    if outcome in BAD or outcome == "xpassed":
        return "failed"
    if outcome in ("skipped", "xfailed"):
        return "skipped"
    return "passed"


def table(report: Report) -> list[str]:
    """Rows of passed / failed / skipped per (mode, compression); other tests last."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for rec in report.items.values():
        key = (rec.get("mode") or "(other tests)", rec.get("compression") or "")
        row = counts.setdefault(key, dict.fromkeys(COLUMNS, 0))
        row[_column(rec["outcome"])] += 1
    width = max([len(m) for m, _ in counts] + [len("mode")])
    cwidth = max([len(c) for _, c in counts] + [len("compression")])
    lines = [f"{'mode':<{width}}  {'compression':<{cwidth}}"
             + "".join(f"{c:>9}" for c in COLUMNS)]
    total = dict.fromkeys(COLUMNS, 0)
    for (mode, comp), row in sorted(counts.items(), key=lambda kv: (kv[0][0] == "(other tests)",
                                                                     kv[0])):
        lines.append(f"{mode:<{width}}  {comp:<{cwidth}}" + "".join(f"{row[c]:>9}"
                                                                   for c in COLUMNS))
        for c in COLUMNS:
            total[c] += row[c]
    lines.append(f"{'total':<{width}}  {'':<{cwidth}}" + "".join(f"{total[c]:>9}"
                                                                 for c in COLUMNS))
    return lines


def describe(report: Report) -> str:
    """One line: the sessions' criu and kernel, and whether the shards add up."""
    crius = sorted({f"{s['criu'].get('version')} ({s['criu'].get('bin')})"
                    for s in report.sessions if isinstance(s.get("criu"), dict)})
    kernels = sorted({str(s.get("kernel")) for s in report.sessions})
    return (f"{len(report.files)} file(s): {report.completeness()}; criu "
            f"{', '.join(crius) or 'none'}; kernel {', '.join(kernels) or '?'}")


@dataclass
class Comparison:
    changed: list[tuple[str, str, str, str]]  # id, baseline outcome, new outcome, note
    only_baseline: list[str]
    only_new: list[str]
    slower: list[tuple[str, str, float, float]]  # id, stage, baseline s, new s

    @property
    def regressions(self) -> list[tuple[str, str, str, str]]:
        """Tests that passed in the baseline and fail now."""
        return [c for c in self.changed if c[1] == "passed" and c[2] in BAD]


def compare(base: Report, new: Report, slower_pct: float = 50.0, min_delta: float = 0.2
            ) -> Comparison:
    """Outcome changes, tests in one run only, and stages slower by more than `slower_pct`
    percent and `min_delta` seconds (both must hold: tiny stages jitter by large ratios)."""
    changed, slower = [], []
    for rid in sorted(set(base.items) & set(new.items)):
        b, n = base.items[rid], new.items[rid]
        if b["outcome"] != n["outcome"]:
            note = f"failed at stage {n['failed_stage']}" if n.get("failed_stage") else ""
            changed.append((rid, b["outcome"], n["outcome"], note))
        if b["outcome"] != "passed" or n["outcome"] != "passed":
            continue
        for stage, secs in sorted(n.get("stages", {}).items()):
            was = b.get("stages", {}).get(stage)
            if was is None:
                continue
            if secs - was > min_delta and secs > was * (1 + slower_pct / 100):
                slower.append((rid, stage, was, secs))
    return Comparison(changed, sorted(set(base.items) - set(new.items)),
                      sorted(set(new.items) - set(base.items)), slower)


def comparison_lines(c: Comparison, slower_pct: float, min_delta: float) -> list[str]:
    out = [f"outcome changes (baseline -> this run): {len(c.changed)}"]
    for rid, was, now, note in c.changed:
        out.append(f"  {rid}: {was} -> {now}" + (f" ({note})" if note else ""))
    out.append(f"stages slower by more than {slower_pct:g}% and {min_delta:g}s: "
               f"{len(c.slower)}")
    for rid, stage, before, after in c.slower:
        out.append(f"  {rid}: {stage} {before:.3f}s -> {after:.3f}s (x{after / before:.2f})"
                   if before else f"  {rid}: {stage} {before:.3f}s -> {after:.3f}s")
    if c.only_baseline:
        out.append(f"only in the baseline: {len(c.only_baseline)}")
        out += [f"  {rid}" for rid in c.only_baseline[:50]]
    if c.only_new:
        out.append(f"only in this run: {len(c.only_new)}")
        out += [f"  {rid}" for rid in c.only_new[:50]]
    return out
