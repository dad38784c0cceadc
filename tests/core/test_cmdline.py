from __future__ import annotations

from handlers import cmdline


def test_merge_adds_missing_tokens_in_order() -> None:
    assert cmdline.merge("console=ttyS0 reboot=k panic=1", ["console=ttyS0", "reboot=k",
                                                             "panic=1", "pci=off"]) == \
        "console=ttyS0 reboot=k panic=1 pci=off"


def test_merge_respects_a_persons_value_for_the_same_key() -> None:
    assert cmdline.merge("panic=10", ["panic=1", "rw"]) == "panic=10 rw"


def test_consoles() -> None:
    # Several consoles are legitimate; a serial one does not stand in for a VT console (a
    # KVM VM of OpenNebula has no serial port) ...
    assert cmdline.merge("console=ttyS0", ["console=tty0"]) == "console=ttyS0 console=tty0"
    assert cmdline.merge("console=tty1", ["console=ttyS0"]) == "console=tty1 console=ttyS0"
    # ... but a VT console a person chose is not moved by hookd's.
    assert cmdline.merge("console=tty1", ["rw", "console=tty0"]) == "console=tty1 rw"
    assert cmdline.merge("console=ttyS0 rw", ["console=ttyS0"]) == "console=ttyS0 rw"


def test_quoted_values_stay_one_token() -> None:
    assert cmdline.split('a="b c" d') == ['a="b c"', "d"]


def test_empty() -> None:
    assert cmdline.merge(None, ["rw"]) == "rw"
    assert cmdline.merge("", []) == ""


def test_has_key() -> None:
    assert cmdline.has_key("root=/dev/vda rw", "root")
    assert not cmdline.has_key("rw", "root")
