"""The boot proof on KVM: the template hookd produces for a Docker Hub image, booted under
QEMU the way OpenNebula's KVM driver would, with the Debian kernel, an initrd and the
image's START_SCRIPT; and what happens when the template is wrong."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from handlers.facts import VmTemplateFacts
from handlers.template import Template, Vector
from hookd.kernels import verify_kernel

from .conftest import BootGuest
from .scenario import (
    INITRD_IMAGE_ID,
    KERNEL_IMAGE_ID,
    PlannedTemplate,
    assert_app_ran_as_configured,
    image_config,
    injected_start_script,
    oned_template_xml,
    plan_dockerhub_template,
    start_script,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.requires_system("qemu"),
    # The first run on a machine downloads the Debian kernel.
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="module")
def kvm_template() -> PlannedTemplate:
    planned = plan_dockerhub_template("kvm", image_config())
    assert planned.plan.status == "applied", planned.plan.reason
    return planned


def os_vector(planned: PlannedTemplate) -> Vector:
    vector = planned.after.template.vector("OS")
    assert vector is not None
    return vector


def with_template(facts: VmTemplateFacts, template: Template) -> VmTemplateFacts:
    return VmTemplateFacts(facts.id, facts.name, facts.uid, facts.uname, template)


def test_hookd_template_boots_and_starts_the_app_like_docker_run(
    boot_guest: BootGuest, kvm_template: PlannedTemplate
) -> None:
    os_vec = os_vector(kvm_template)
    # What hookd wrote is what gets booted: kernel and initrd by image id, ROOT, KERNEL_CMD.
    assert os_vec.get("KERNEL_DS") == f"$FILE[IMAGE_ID={KERNEL_IMAGE_ID}]"
    assert os_vec.get("INITRD_DS") == f"$FILE[IMAGE_ID={INITRD_IMAGE_ID}]"
    assert injected_start_script(kvm_template.after) == start_script(image_config())

    result = boot_guest.boot(kvm_template.xml)
    report = result.report()
    assert not result.problems(), report
    # The command line is LibVirtDriverKVM's, built from the template alone (and the harness's
    # serial console appended to observe the guest: OpenNebula gives the VM no serial port).
    assert result.cmdline == (f"root=/dev/{os_vec.get('ROOT')} {os_vec.get('KERNEL_CMD')} "
                              f"console=ttyS0")
    assert result.booted, report
    assert result.root_device == "/dev/vda", report
    assert result.root_mode == "rw" and result.root_writable, report
    assert result.context_device is not None and result.context_device.startswith("/dev/sr")
    # START_SCRIPT: returned promptly with 0, and contextualization went on after it.
    assert result.marker("start-script") == "base64", report
    assert result.start_script_exit == 0, report
    seconds = result.start_script_seconds
    assert seconds is not None and seconds < 2.0, report
    continued, returned = result.at("context"), result.at("start-script-exit")
    assert result.context_continued and continued is not None and returned is not None
    assert continued >= returned
    assert_app_ran_as_configured(result, image_config())


def test_wrong_root_device_fails_with_a_clear_message(
    boot_guest: BootGuest, kvm_template: PlannedTemplate
) -> None:
    os_vec = os_vector(kvm_template)
    broken = with_template(kvm_template.after,
                           kvm_template.after.template.replaced("OS", [os_vec.set("ROOT", "vdb")]))
    result = boot_guest.boot(oned_template_xml(broken))
    assert result.cmdline.startswith("root=/dev/vdb ")
    assert not result.booted
    problems = result.problems()
    assert any(p.startswith("root device /dev/vdb never appeared") for p in problems), \
        result.report()
    # The guest says which disks there were, and powered off by itself.
    assert "block devices: " in problems[0] and "vda" in problems[0]
    assert not result.timed_out and result.exit_code == 0, result.report()


def test_bzimage_boots_under_qemu_so_hookds_kernel_check_is_the_gate(
    boot_guest: BootGuest, kvm_template: PlannedTemplate
) -> None:
    bzimage = boot_guest.kernel.vmlinuz
    # hookd refuses the bzImage for KVM (and accepts the vmlinux extracted from it) ...
    verdict = verify_kernel(bzimage, "kvm")
    assert not verdict.usable
    assert "compressed bzImage" in verdict.reason
    assert verify_kernel(boot_guest.kernel.vmlinux, "kvm").usable
    # ... although QEMU boots a bzImage given as the kernel: its x86 loader takes the Linux
    # boot protocol for anything with a "HdrS" header (hw/i386/x86-common.c) and only needs
    # the PVH note for an ELF. The same template with the bzImage behind KERNEL_DS boots all
    # the way. What rejects it is hookd's check (Firecracker would not load it).
    result = boot_guest.boot(kvm_template.xml, kernel=bzimage)
    assert not result.problems(), result.report()
    assert result.booted and result.root_device == "/dev/vda" and result.root_mode == "rw"
    assert result.start_script_exit == 0
    assert_app_ran_as_configured(result, image_config())


def without_pvh_note(vmlinux: Path, out: Path) -> Path:
    """A copy of ``vmlinux`` whose XEN_ELFNOTE_PHYS32_ENTRY note (type 18) has another type,
    as if built without CONFIG_PVH (plain struct walk of the PT_NOTE segments)."""
    shutil.copyfile(vmlinux, out)
    with out.open("r+b") as handle:
        header = handle.read(64)
        (phoff,) = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
        for index in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
                "<IIQQQQ", table, index * phentsize
            )
            if p_type != 4:  # PT_NOTE
                continue
            handle.seek(p_offset)
            notes = handle.read(p_filesz)
            position = 0
            while position + 12 <= len(notes):
                namesz, descsz, n_type = struct.unpack_from("<III", notes, position)
                if n_type == 18:
                    handle.seek(p_offset + position + 8)
                    handle.write(struct.pack("<I", 0x7FFF))
                    return out
                position += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    raise AssertionError(f"{vmlinux} has no PVH note")


def test_elf_without_pvh_note_is_refused_by_qemu_and_by_hookd(
    boot_guest: BootGuest, kvm_template: PlannedTemplate, tmp_path: Path
) -> None:
    kernel = without_pvh_note(boot_guest.kernel.vmlinux, tmp_path / "vmlinux-no-pvh")
    verdict = verify_kernel(kernel, "kvm")
    assert not verdict.usable and "PVH" in verdict.reason
    result = boot_guest.boot(kvm_template.xml, kernel=kernel)
    assert result.exit_code == 1 and not result.booted
    assert result.problems() == [
        "QEMU failed before the guest printed anything: qemu-system-x86_64: Error loading "
        "uncompressed kernel without PVH ELF Note"
    ], result.report()


def test_start_script_that_does_not_return_is_reported(
    boot_guest: BootGuest, kvm_template: PlannedTemplate
) -> None:
    """What hookd's START_SCRIPT avoids: a script that runs the server in the foreground (as
    one would write `nginx -g 'daemon off;'`) never returns, and one-context waits for ever.
    Given as a plain START_SCRIPT (not base64), which one-context writes with echo."""
    context = kvm_template.after.template.vector("CONTEXT")
    assert context is not None
    foreground = "#!/bin/sh\necho serving in the foreground\nexec sleep 600\n"
    hung = with_template(
        kvm_template.after,
        kvm_template.after.template.replaced(
            "CONTEXT", [context.set("START_SCRIPT_BASE64", None).set("START_SCRIPT", foreground)]
        ),
    )
    result = boot_guest.boot(oned_template_xml(hung), start_script_limit=3)
    assert result.booted and result.marker("start-script") == "plain", result.report()
    assert "START_SCRIPT did not return within 3 s (one-context would wait for ever: no " \
        "READY report, no later context scripts, lock held)" in result.problems()
    assert not result.context_continued and result.start_script_exit is None
    assert not result.timed_out and result.exit_code == 0
