"""bench corpus puts back what zdtm.py leaves: only what changed after the bench looked."""

from zdtmpy.bench.upstream_leftovers import Before


def test_hugepages_left_by_upstream_are_put_back(tmp_path):
    (tmp_path / "vm").mkdir()
    knob = tmp_path / "vm" / "nr_hugepages"
    knob.write_text("0\n")
    before = Before.take(proc_sys=tmp_path)
    knob.write_text("20\n")  # what zdtm.py leaves here
    lines = before.put_back(proc_sys=tmp_path)
    assert knob.read_text().strip() == "0"
    assert "sysctl vm.nr_hugepages: 20 -> 0 (restored)" in lines


def test_nothing_changed_means_nothing_touched(tmp_path):
    (tmp_path / "vm").mkdir()
    knob = tmp_path / "vm" / "nr_hugepages"
    knob.write_text("7\n")
    before = Before.take(proc_sys=tmp_path)
    assert before.put_back(proc_sys=tmp_path) == []
    assert knob.read_text() == "7\n"  # not even rewritten


def test_only_hierarchies_that_appeared_during_zdtm_py_are_dropped(tmp_path, monkeypatch):
    from zdtmpy.corpus import sysprep

    alive = {"zdtmtst.defaultroot"}            # there before the bench: someone else's
    monkeypatch.setattr(sysprep, "hierarchy_exists", lambda name: name in alive)
    dropped = []
    monkeypatch.setattr(sysprep, "drop_hierarchy", lambda name: dropped.append(name) or True)
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "nr_hugepages").write_text("0\n")
    before = Before.take(proc_sys=tmp_path)
    alive.add("zdtmtst")                        # zdtm_mount_cgroups, left by a failing run
    lines = before.put_back(proc_sys=tmp_path)
    assert dropped == ["zdtmtst"]
    assert any(line.startswith("cgroup hierarchy name=zdtmtst: its cgroups removed")
               for line in lines)
