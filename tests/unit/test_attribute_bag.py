"""Reference tracking as one mechanism: TrackingBag records, overlays expose its tracker."""

from __future__ import annotations

from mixerd.attribute import DictBag, OverlayBag, ReferenceTracker, TrackingBag, tracker_of


def test_tracker_of_finds_the_tracker_through_overlays() -> None:
    tracking = TrackingBag({"a": "1"})
    assert tracker_of(tracking) is tracking.tracker
    assert tracker_of(OverlayBag(tracking)) is tracking.tracker
    assert tracker_of(OverlayBag(OverlayBag(tracking))) is tracking.tracker
    assert tracker_of({"a": "1"}) is None
    assert tracker_of(DictBag({"a": "1"})) is None
    assert tracker_of(OverlayBag({"a": "1"})) is None


def test_untracked_reads_leave_no_reference() -> None:
    bag = TrackingBag({"a": "1", "m": {"k": "v"}})
    bag.get("a")
    with bag.tracker.untracked():
        bag.get("b")
        bag.get("a")
        m = bag.get("m")
        assert m is not None and m.get("k") == "v"
    assert bag.tracker.log() == ["a"]
    assert bag.tracker.whole_maps == set()


def test_overlay_reads_generated_attributes_without_recording() -> None:
    tracker = ReferenceTracker()
    overlay = OverlayBag(TrackingBag({"a": "1"}, tracker))
    overlay.set("gen", "x")
    assert overlay.get("gen") == "x" and overlay.get("a") == "1"
    assert tracker.log() == ["a"]


def test_string_maps_are_tracked_per_key() -> None:
    bag = TrackingBag({"m": {"k": "v"}})
    m = bag["m"]
    assert m.get("k") == "v" and m.get("x") is None
    assert bag.tracker.log() == ["-m[x]", "m", "m[k]"]
    assert bag.tracker.whole_maps == {"m"}
