"""xdist workers run the zdtmpy items longest first (compressed variants, or the longest an
earlier report recorded), every worker in the same order."""

from zdtmpy.items import ZdtmItem, longest_first


def _items(pytester):
    pytester.mkdir("descs")
    for name in ("a", "b", "c"):
        (pytester.path / "descs" / f"{name}.desc").write_text("{'arch': 'nosucharch'}")
    items, _ = pytester.inline_genitems("-p", "no:cacheprovider", "--zdtm-mode", "plain",
                                        "--zdtm-compress", "off", "--zdtm-compress",
                                        "region64k", "descs")
    assert len(items) == 6 and all(isinstance(i, ZdtmItem) for i in items)
    return items


def _names(items):
    return [i.name for i in items]


def test_compressed_variants_go_first_in_collection_order(pytester):
    items = _items(pytester)
    assert _names(items) == ["a[plain-off]", "a[plain-region64k]", "b[plain-off]",
                             "b[plain-region64k]", "c[plain-off]", "c[plain-region64k]"]
    longest_first(items, {})
    assert _names(items) == ["a[plain-region64k]", "b[plain-region64k]",
                             "c[plain-region64k]", "a[plain-off]", "b[plain-off]",
                             "c[plain-off]"]


def test_recorded_durations_decide_when_there_are_some(pytester):
    items = _items(pytester)
    ids = {i.name: i.nodeid for i in items}
    durations = {ids["c[plain-off]"]: 9.0, ids["a[plain-region64k]"]: 0.5,
                 ids["b[plain-off]"]: 3.0}   # the rest: the median, 3.0
    longest_first(items, durations)
    assert _names(items) == ["c[plain-off]", "a[plain-off]", "b[plain-off]",
                             "b[plain-region64k]", "c[plain-region64k]",
                             "a[plain-region64k]"]


def test_other_items_keep_their_places(pytester):
    items = _items(pytester)
    other = object()
    mixed = [items[0], other, *items[1:]]
    longest_first(mixed, {})
    assert mixed[1] is other
    assert _names([i for i in mixed if i is not other])[0] == "a[plain-region64k]"
