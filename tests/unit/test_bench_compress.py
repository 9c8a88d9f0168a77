"""`zdtmpy bench compress`: a tiny run gives a well-formed table and JSON (never timings)."""

import json
import shutil

import pytest

from zdtmpy.bench import BenchError
from zdtmpy.bench.compress import MODES, parse_bytes
from zdtmpy.bench.patterns import PATTERNS, PIECE, pattern_pieces
from zdtmpy.cli import main


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "compress", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--size", "--json", "--chart", "--patterns", "--modes", "--repeat"):
        assert opt in out


def test_parse_bytes():
    assert parse_bytes("4M") == 4 << 20
    assert parse_bytes("1G") == 1 << 30
    assert parse_bytes("64k") == 64 << 10
    with pytest.raises(BenchError):
        parse_bytes("lots")


@pytest.mark.parametrize("name", PATTERNS)
def test_patterns_have_the_asked_length(name):
    total = 3 * PIECE // 2 + 4096
    pieces = list(pattern_pieces(name, total))
    assert sum(len(p) for p in pieces) == total
    data = b"".join(bytes(p) for p in pieces)
    if name == "zero":
        assert data == bytes(total)
    else:
        assert data.count(0) < total


def test_mixed_is_half_zero():
    total = 16 << 20
    zero_pages = sum(1 for p in pattern_pieces("mixed", total)
                     for off in range(0, len(p), 4096) if not any(bytes(p[off:off + 4096])))
    assert 0.35 < zero_pages / (total // 4096) < 0.65


def test_bad_options_are_errors(capsys):
    assert main(["bench", "compress", "--size", "4M", "--patterns", "nope"]) == 1
    assert "nope" in capsys.readouterr().err
    assert main(["bench", "compress", "--size", "4M", "--modes", "both"]) == 1


def test_tiny_run_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "compress", "--size", "4M", "--json", str(out),
               "--tmpdir", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["size"] == 4 << 20
    assert res["more_rounds"] == {}   # only with --repeat
    rows = {(r["pattern"], r["mode"]) for r in res["results"]}
    assert rows == {(p, m) for p in PATTERNS for m in MODES}
    for r in res["results"]:
        for action in ("compress", "decompress"):
            assert r[action]["seconds"] > 0
            assert r[action]["mbps"] > 0
            assert r[action]["rss_mib"] > 0
        assert set(r["targets"]) == {"compress", "decompress", "rss"}
        assert r["ratio"] is None or r["ratio"] >= 1.0
        line = next(ln for ln in text.splitlines()
                    if ln.split()[:2] == [r["pattern"], r["mode"]])
        assert ("ok" in line) or ("MISS" in line) or ("n/a" in line)
    by_pattern = {r["pattern"]: r for r in res["results"] if r["mode"] == "page"}
    assert by_pattern["zero"]["bytes_after"] == 0
    assert by_pattern["random"]["ratio"] == pytest.approx(1.0, abs=0.01)
    assert set(res["reference"]) == set(PATTERNS)
    if shutil.which("lz4"):
        for ref in res["reference"].values():
            assert ref["compress"]["mbps"] > 0 and ref["decompress"]["mbps"] > 0
            assert ref["ratio"] > 0.99   # frame overhead on random data
        assert all(r["vs_lz4"]["compress"] > 0 for r in res["results"])
    assert "targets (x lz4, wall)" in text
    assert "region never slower than per-page (CPU seconds)" in text
    # region against per-page, per pattern and direction, with the coder's own cost
    cmp = res["region_vs_page"]
    assert {(r["pattern"], r["action"]) for r in cmp} == \
        {(p, a) for p in PATTERNS for a in ("compress", "decompress")}
    for r in cmp:
        assert r["coder_cpu"] is not None and r["coder_cpu"] > 0
        line = next(ln for ln in text.splitlines()
                    if ln.split()[:2] == [r["pattern"], r["action"]])
        assert ("ok" if r["met"] else "NOT met: ") in line
    summary = next(ln for ln in text.splitlines()
                   if ln.startswith("region never slower than per-page: "))
    assert summary.endswith("met") == all(r["met"] for r in cmp)
    # the codec in memory against python-lz4 on one core, per pattern and layout
    assert {(r["pattern"], r["mode"]) for r in res["memory"]} == rows
    for r in res["memory"]:
        for action in ("compress", "decompress"):
            assert r[action]["codec_mbps"] > 0 and r[action]["ceiling_mbps"] > 0
            assert r[action]["ratio"] > 0 and isinstance(r[action]["met"], bool)
    assert "in-memory targets met:" in text
    # per direction: ours, lz4 and python-lz4 seconds, the floor and the bound it sets
    for r in res["results"]:
        for action in ("compress", "decompress"):
            b = r["bounds"][action]
            assert b["write_floor_s"] is not None and b["write_floor_s"] >= 0
            assert b["cpu_floor_s"] is not None and b["cpu_floor_s"] >= 0
            if shutil.which("lz4") and b["floor_s"]:
                assert b["bound"] == pytest.approx(
                    res["reference"][r["pattern"]][action]["seconds"] / b["floor_s"])
        line = next(ln for ln in text.splitlines()
                    if ln.split()[:3] == [r["pattern"], r["mode"], "decompress"])
        kept = " (pages file kept)"
        assert line.endswith(kept) == r["decompress"]["pages_kept"]
        # random data: every block raw, so the pages file stays (only the pagemap changes)
        assert r["decompress"]["pages_kept"] == (r["pattern"] == "random")
        assert line.removesuffix(kept).split()[-1] in ("ok", "MISS", "reach", "n/a")
    assert "out of reach on this machine (bound below the target):" in text
    for r in res["memory"]:
        for action in ("compress", "decompress"):
            assert 0 <= r[action]["ceiling_data_cpu_s"] <= r[action]["ceiling_cpu_s"] + 1e-6
            assert r[action]["coder_cpu_s"] >= 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("zdtmpy-bench")]


def test_verdict_says_when_a_target_is_out_of_reach():
    from zdtmpy.bench.compress_bounds import verdict

    assert verdict(True, 1.0, 3.0) == "ok"          # met, whatever the bound says
    assert verdict(False, 2.0, 3.0) == "out of reach"
    assert verdict(False, 4.0, 3.0) == "MISS"
    assert verdict(False, None, 3.0) == "MISS"
    assert verdict(None, 4.0, 3.0) == "n/a"


def test_write_floor_writes_and_removes_its_file(tmp_path):
    from zdtmpy.bench.compress_bounds import stored_bytes, write_floor

    assert write_floor(tmp_path, 3 << 20) > 0
    assert list(tmp_path.iterdir()) == []
    f = tmp_path / "sparse"
    with open(f, "wb") as fh:
        fh.truncate(1 << 20)
        fh.write(b"x" * 4096)
    assert stored_bytes(f) < 1 << 20


def test_bound_is_never_below_the_ratio_reached():
    """A floor measured at a bad moment (above the time we took) does not make a target
    we reached look out of reach: the floor is at most our time."""
    from zdtmpy.bench.compress_bounds import add_bounds

    row = {"bytes": 100, "compress": {"seconds": 0.5}, "decompress": {"seconds": 1.0}}
    ref = {"compress": {"seconds": 2.0}, "decompress": {"seconds": 1.5}}
    memory = {"bytes": 100, "compress": {"ceiling_data_cpu_s": 0.2},
              "decompress": {"ceiling_data_cpu_s": 0.1}}
    add_bounds(row, ref, {"compress": 0.8, "decompress": 0.3}, memory, 2)
    assert row["bounds"]["compress"]["floor_s"] == 0.5          # 0.8 measured, 0.5 done
    assert row["bounds"]["compress"]["bound"] == pytest.approx(4.0)
    assert row["bounds"]["decompress"]["floor_s"] == 0.3        # write floor over CPU 0.05
    assert row["bounds"]["decompress"]["bound"] == pytest.approx(5.0)


def _layout_result(region_c: float, page_c: float, coder_r: float, coder_p: float) -> dict:
    def row(mode, c):
        return {"pattern": "text", "mode": mode,
                "compress": {"seconds": c, "cpu_seconds": 2 * c},
                "decompress": {"seconds": 0.5, "cpu_seconds": 0.8}}

    def mem(mode, coder):
        return {"pattern": "text", "mode": mode, "bytes": 1 << 20,
                "compress": {"coder_cpu_s": coder}, "decompress": {"coder_cpu_s": 0.1}}

    return {"region_size": 256 << 10,
            "results": [row("page", page_c), row("region", region_c)],
            "memory": [mem("page", coder_p), mem("region", coder_r)]}


def test_region_vs_page_names_the_coder_when_region_loses():
    from zdtmpy.bench.compress_layouts import compare, lines

    rows = compare(_layout_result(1.05, 1.00, 0.21, 0.20))
    c = next(r for r in rows if r["action"] == "compress")
    assert not c["met"]
    assert c["wall"] == pytest.approx(1.05) and c["coder_cpu"] == pytest.approx(1.05)
    assert "LZ4 itself costs 1.05x per byte on 256 KiB blocks" in c["why"]
    d = next(r for r in rows if r["action"] == "decompress")
    assert d["met"] and d["why"] == ""
    text = "\n".join(lines(rows))
    assert "region never slower than per-page: NOT met (text compress)" in text
    # region slower, but its coder is not: the difference is what the line gives
    c = next(r for r in compare(_layout_result(1.05, 1.00, 0.19, 0.20))
             if r["action"] == "compress")
    assert c["why"] == "by 50.0 ms of 1000.0"
    assert lines(compare(_layout_result(0.9, 1.0, 0.3, 0.2)))[-1] == \
        "region never slower than per-page: met"


def test_write_seconds_both_ways_leave_nothing(tmp_path):
    from zdtmpy.bench.compress_bounds import write_seconds

    for behind in (False, True):
        assert write_seconds(tmp_path, 9 << 20, behind) > 0
        assert list(tmp_path.iterdir()) == []


def test_short_times_get_more_rounds_with_repeat(tmp_path, capsys):
    """Milliseconds (random data: the pages file is kept) are mostly noise: with --repeat,
    every layout of that pattern is measured SHORT_EXTRA more times. What counts as short is
    given here (a minute, then nothing), so the load of the machine cannot decide it."""
    from zdtmpy.bench.compress import SHORT_EXTRA

    out = tmp_path / "bench.json"
    args = ["bench", "compress", "--size", "1M", "--patterns", "random", "--repeat", "2",
            "--json", str(out), "--tmpdir", str(tmp_path)]
    assert main([*args, "--short-below", "60000"]) == 0
    assert json.loads(out.read_text())["more_rounds"] == {"random": SHORT_EXTRA}
    assert f"best of 2, random +{SHORT_EXTRA} (times under 60000 ms)" in capsys.readouterr().out
    assert main([*args, "--short-below", "0"]) == 0
    assert json.loads(out.read_text())["more_rounds"] == {}
    assert "times under" not in capsys.readouterr().out
