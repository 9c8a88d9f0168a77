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
