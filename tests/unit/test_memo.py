"""The one eviction policy of mixerd's bounded memos."""

from __future__ import annotations

from mixerd.attribute import remember


def test_a_memo_keeps_up_to_its_limit_then_starts_again_from_the_new_entry() -> None:
    memo: dict[int, str] = {}
    for i in range(3):
        assert remember(memo, i, f"v{i}", 3) == f"v{i}"
    assert memo == {0: "v0", 1: "v1", 2: "v2"}
    assert remember(memo, 3, "v3", 3) == "v3"
    assert memo == {3: "v3"}
    assert remember(memo, 3, "again", 3) == "again"  # a present key is replaced, nothing evicted
    assert memo == {3: "again"}
