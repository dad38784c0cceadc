"""The functional core: facts in, plan out. Exact expectations, no I/O."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from handlers.facts import ImageFacts, VmTemplateFacts
from handlers.model import OciProblem, OciProcessFacts, OciUnavailable, PlannerSettings, World
from handlers.plan import ImagePlan, short_hash
from handlers.planner import plan_for
from handlers.template import Template, Vector
from tests.core import factories as f


def attrs(tmpl: VmTemplateFacts) -> dict[str, object]:
    out: dict[str, object] = {}
    for attr in tmpl.template:
        value: object = attr.value if isinstance(attr.value, str) else attr.value.as_dict()
        if attr.name in out:
            existing = out[attr.name]
            out[attr.name] = [*existing, value] if isinstance(existing, list) else [existing,
                                                                                    value]
        else:
            out[attr.name] = value
    return out


def fixed(img: ImageFacts, tmpl: VmTemplateFacts, **kw: object) -> tuple[ImagePlan,
                                                                        VmTemplateFacts]:
    world = f.world(**kw)  # type: ignore[arg-type]
    plan = plan_for(img, [tmpl], world, f.DEFAULTS)
    return plan, f.apply_edits(tmpl, plan)


B64 = base64.b64encode(f.SCRIPT.encode()).decode()


def test_dockerhub_on_kvm_gets_kernel_root_cmdline_and_start_script() -> None:
    plan, after = fixed(f.image(), f.vmtemplate(), hypervisors=["kvm"])
    assert plan.status == "applied"
    got = attrs(after)
    assert got["OS"] == {
        "KERNEL_CMD": "console=ttyS0 reboot=k panic=1 rw console=tty0",
        "KERNEL_DS": "$FILE[IMAGE_ID=0]",
        "ROOT": "vda",
    }
    assert got["CONTEXT"] == {
        "NETWORK": "YES", "SSH_PUBLIC_KEY": "$USER[SSH_PUBLIC_KEY]", "SET_HOSTNAME": "$NAME",
        "START_SCRIPT_BASE64": B64,
    }
    # DEV_PREFIX comes from the image (vd): the DISK is left as it was.
    assert got["DISK"] == {"IMAGE_ID": "10"}
    assert "SCHED_REQUIREMENTS" not in got  # one hypervisor: nothing to pin
    record = got["HOOKD"]
    assert isinstance(record, dict)
    assert record["IMAGE_ID"] == "10" and record["HYPERVISOR"] == "kvm"
    assert record["VERSION"] == "2"
    assert record["H_OS_ROOT"] == short_hash("vda")
    # KERNEL_CMD had a value before hookd merged its tokens into it: kept, to undo exactly.
    assert record["W_OS_KERNEL_CMD"] == "console=ttyS0 reboot=k panic=1"
    assert "W_OS_ROOT" not in record  # ROOT was unset
    assert dict(plan.image_attributes)["HOOKD_STATUS"] == "applied"
    assert dict(plan.image_attributes)["HOOKD_SOURCE"] == "registry:docker.io"


def test_firecracker_merges_cmdline_and_never_adds_root() -> None:
    plan, after = fixed(f.image(), f.vmtemplate(), hypervisors=["firecracker"])
    os_vec = attrs(after)["OS"]
    assert os_vec == {
        "KERNEL_CMD": "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux "
                      "i8042.nopnp i8042.dumbkbd",
        "KERNEL_DS": "$FILE[IMAGE_ID=1]",
    }
    assert plan.status == "applied"


def test_lxc_only_gets_the_start_script() -> None:
    plan, after = fixed(f.image(), f.vmtemplate(), hypervisors=["lxc"])
    got = attrs(after)
    assert got["OS"] == {"KERNEL_CMD": "console=ttyS0 reboot=k panic=1"}
    assert isinstance(got["CONTEXT"], dict) and got["CONTEXT"]["START_SCRIPT_BASE64"] == B64
    assert plan.status == "applied"


def test_vcenter_is_unsupported_and_untouched() -> None:
    tmpl = f.vmtemplate()
    plan, after = fixed(f.image(), tmpl, hypervisors=["vcenter"])
    assert plan.status == "unsupported"
    assert "vCenter cannot run container images" in plan.reason
    assert after == tmpl
    assert dict(plan.image_attributes)["HOOKD_STATUS"] == "unsupported"


def test_unknown_vm_mad_is_unsupported() -> None:
    plan, _after = fixed(f.image(), f.vmtemplate(), hypervisors=["xen3"])
    assert plan.status == "unsupported"
    assert "'xen3'" in plan.reason
    assert not plan.edits


def test_mixed_cluster_prefers_config_order_and_pins() -> None:
    img, tmpl = f.image(), f.vmtemplate()
    world = f.world(["kvm", "lxc", "firecracker"])
    settings = PlannerSettings(prefer=("kvm", "firecracker", "lxc"))
    plan = plan_for(img, [tmpl], world, settings)
    after = f.apply_edits(tmpl, plan)
    got = attrs(after)
    assert got["SCHED_REQUIREMENTS"] == 'HYPERVISOR="kvm"'
    assert isinstance(got["OS"], dict) and got["OS"]["ROOT"] == "vda"
    assert any("chose kvm among firecracker, kvm, lxc" in n for n in plan.templates[0].notes)
    # The pin makes the next plan a no-op.
    again = plan_for(img, [after], world, settings)
    assert not again.edits


def test_mixed_cluster_skips_a_hypervisor_whose_kernel_is_missing() -> None:
    img, tmpl = f.image(), f.vmtemplate()
    world = f.world(["kvm", "lxc"], kernels={})
    plan = plan_for(img, [tmpl], world, PlannerSettings(prefer=("kvm", "lxc")))
    assert plan.templates[0].hypervisor == "lxc"
    got = attrs(f.apply_edits(tmpl, plan))
    assert got["SCHED_REQUIREMENTS"] == 'HYPERVISOR="lxc"'


def test_waiting_for_a_kernel_then_fixed_once_configured() -> None:
    img, tmpl = f.image(), f.vmtemplate()
    plan = plan_for(img, [tmpl], f.world(["kvm"], kernels={}), f.DEFAULTS)
    assert plan.status == "waiting"
    assert plan.reason == "waiting for a kvm kernel (set kernels.kvm in hookd.conf)"
    after = f.apply_edits(tmpl, plan)
    # The START_SCRIPT does not depend on the kernel and is applied already.
    ctx = attrs(after)["CONTEXT"]
    assert isinstance(ctx, dict) and ctx["START_SCRIPT_BASE64"] == B64
    img2 = f.apply_status(img, plan)
    plan2 = plan_for(img2, [after], f.world(["kvm"]), f.DEFAULTS)
    assert plan2.status == "applied"
    os_vec = attrs(f.apply_edits(after, plan2))["OS"]
    assert isinstance(os_vec, dict) and os_vec["KERNEL_DS"] == "$FILE[IMAGE_ID=0]"


def test_unusable_kernel_reason_reaches_the_status() -> None:
    bad = f.kernel(7, usable=False, reason="kernel 7 (k): a compressed bzImage")
    plan = plan_for(f.image(), [f.vmtemplate()], f.world(["kvm"], kernels={"kvm": bad}),
                      f.DEFAULTS)
    assert plan.status == "waiting"
    assert plan.reason == "waiting for a kvm kernel: kernel 7 (k): a compressed bzImage"


def test_replay_changes_nothing() -> None:
    img, tmpl = f.image(), f.vmtemplate()
    world = f.world(["kvm"])
    plan = plan_for(img, [tmpl], world, f.DEFAULTS)
    after, img_after = f.apply_edits(tmpl, plan), f.apply_status(img, plan)
    replay = plan_for(img_after, [after], world, f.DEFAULTS)
    assert replay.is_noop
    assert replay.digest == plan.digest


def test_turnkey_on_kvm_sets_virtio_prefix_on_the_disk() -> None:
    img = f.image(path=f.TURNKEY_PATH, attrs=[("FROM_APP", "3")])
    vm = f.vmtemplate(attrs=[("CPU", "1"), ("SCHED_REQUIREMENTS", 'HYPERVISOR="lx*"'),
                             ("CONTEXT", {"NETWORK": "YES"})])
    world = f.world(["kvm", "lxc"], market="turnkeylinux", oci=None)
    plan = plan_for(img, [vm], replace(world), PlannerSettings(prefer=("kvm", "lxc")))
    # The template's own requirements allow only lx*: LXC it is, nothing to attach.
    assert plan.templates[0].hypervisor == "lxc"
    assert not plan.edits or all(c.attribute != "OS/ROOT" for e in plan.edits
                                 for c in e.changes)
    vm2 = f.vmtemplate(attrs=[("CPU", "1"), ("CONTEXT", {"NETWORK": "YES"})])
    plan2 = plan_for(img, [vm2], f.world(["kvm"], market="turnkeylinux", oci=None),
                       f.DEFAULTS)
    got = attrs(f.apply_edits(vm2, plan2))
    assert got["DISK"] == {"IMAGE_ID": "10", "DEV_PREFIX": "vd"}
    assert got["OS"] == {"KERNEL_DS": "$FILE[IMAGE_ID=0]", "ROOT": "vda",
                         "KERNEL_CMD": "rw console=tty0"}
    ctx = got["CONTEXT"]
    assert isinstance(ctx, dict) and "START_SCRIPT_BASE64" not in ctx  # not a Docker image


def test_seventx_linuxcontainers_template_pinned_to_lxc() -> None:
    img = f.image(path=f.LXD_PATH, attrs=[("FROM_APP", "5")])
    vm = f.vmtemplate(attrs=[("SCHED_REQUIREMENTS", "HYPERVISOR=lxc & ARCH=x86_64"),
                             ("HYPERVISOR", "lxc"), ("CONTEXT", {"NETWORK": "YES"})])
    plan = plan_for(img, [vm], f.world(["kvm", "lxc"], market="linuxcontainers", oci=None,
                                         version=(7, 4, 0)), f.DEFAULTS)
    assert plan.status == "applied"
    assert plan.templates[0].hypervisor == "lxc"
    assert not plan.edits
    assert plan.templates[0].reason == "nothing to change for lxc"
    assert plan.reason == ""  # applied: no reason needed


def test_not_a_container_image_is_left_alone() -> None:
    img = f.image(path="/srv/images/debian.qcow2", attrs=[])
    plan = plan_for(img, [f.vmtemplate()], f.world(market=None), f.DEFAULTS)
    assert plan.status is None and plan.is_noop


@pytest.mark.parametrize("type_", [1, 3, 4, 5])
def test_non_root_filesystem_types_are_left_alone(type_: int) -> None:
    plan = plan_for(f.image(type_=type_), [f.vmtemplate()], f.world(), f.DEFAULTS)
    assert plan.status is None and plan.is_noop


def test_app_from_a_non_container_marketplace_is_not_container() -> None:
    img = f.image(path="https://marketplace.opennebula.io/appliance/x/download/0")
    plan = plan_for(img, [f.vmtemplate()], f.world(market="one"), f.DEFAULTS)
    assert plan.status is None


def test_opt_out_and_opt_in() -> None:
    out = f.image(attrs=[("FROM_APP", "0"), ("HOOKD_MANAGE", "no")])
    plan = plan_for(out, [f.vmtemplate()], f.world(), f.DEFAULTS)
    assert plan.status == "skipped" and not plan.edits
    assert dict(plan.image_attributes)["HOOKD_STATUS"] == "skipped"
    opt_in = f.image(path="/srv/rootfs.img", attrs=[("HOOKD_MANAGE", "yes")])
    plan = plan_for(opt_in, [f.vmtemplate()], f.world(["kvm"], market=None), f.DEFAULTS)
    assert plan.status == "applied" and plan.edits


def test_datastore_scope() -> None:
    settings = PlannerSettings(scope_datastores=frozenset({200}))
    plan = plan_for(f.image(), [f.vmtemplate()], f.world(), settings)
    assert plan.status is None and "out of scope" in plan.reason


def test_image_not_ready_is_not_touched() -> None:
    plan = plan_for(f.image(state=4), [f.vmtemplate()], f.world(), f.DEFAULTS)
    assert plan.status is None and plan.is_noop


def test_no_template_yet_is_skipped() -> None:
    plan = plan_for(f.image(), [], f.world(), f.DEFAULTS)
    assert plan.status == "skipped"
    assert plan.reason == "no VM template uses this image yet"


def test_person_changed_value_after_hookd_is_kept() -> None:
    img, tmpl = f.image(), f.vmtemplate()
    world = f.world(["kvm"])
    plan = plan_for(img, [tmpl], world, f.DEFAULTS)
    after = f.apply_edits(tmpl, plan)
    # A person sets ROOT to sda after hookd set vda.
    os_vec = after.template.vector("OS")
    assert os_vec is not None
    edited = VmTemplateFacts(after.id, after.name, after.uid, after.uname,
                             after.template.replaced("OS", [os_vec.set("ROOT", "sda")]))
    again = plan_for(f.apply_status(img, plan), [edited], world, f.DEFAULTS)
    assert not again.edits
    assert any("kept OS/ROOT='sda': a person changed it after hookd set it" in n
               for n in again.templates[0].notes)


def test_person_value_set_before_hookd_is_kept() -> None:
    tmpl = f.vmtemplate(attrs=[("OS", {"KERNEL_DS": "$FILE[IMAGE_ID=42]"}),
                               ("CONTEXT", {"NETWORK": "YES"})])
    plan = plan_for(f.image(), [tmpl], f.world(["kvm"]), f.DEFAULTS)
    os_vec = attrs(f.apply_edits(tmpl, plan))["OS"]
    assert isinstance(os_vec, dict) and os_vec["KERNEL_DS"] == "$FILE[IMAGE_ID=42]"
    assert os_vec["ROOT"] == "vda"


def test_kernel_change_in_config_replaces_hookds_own_value() -> None:
    img, tmpl = f.image(), f.vmtemplate()
    plan = plan_for(img, [tmpl], f.world(["kvm"]), f.DEFAULTS)
    after = f.apply_edits(tmpl, plan)
    plan2 = plan_for(f.apply_status(img, plan), [after],
                       f.world(["kvm"], kernels={"kvm": f.kernel(9)}), f.DEFAULTS)
    os_vec = attrs(f.apply_edits(after, plan2))["OS"]
    assert isinstance(os_vec, dict) and os_vec["KERNEL_DS"] == "$FILE[IMAGE_ID=9]"


def test_persons_start_script_is_kept_by_default_and_appended_on_request() -> None:
    tmpl = f.vmtemplate(attrs=[("CONTEXT", {"NETWORK": "YES", "START_SCRIPT": "echo mine"})])
    plan = plan_for(f.image(), [tmpl], f.world(["lxc"]), f.DEFAULTS)
    assert not plan.edits
    assert "kept the START_SCRIPT a person wrote" in plan.reason
    assert plan.status == "applied"


def test_start_script_policy_append_keeps_the_persons_script() -> None:
    tmpl = f.vmtemplate(attrs=[("CONTEXT", {"NETWORK": "YES", "START_SCRIPT": "echo mine"})])
    settings = PlannerSettings(start_script_policy="append")
    plan = plan_for(f.image(), [tmpl], f.world(["lxc"]), settings)
    ctx = attrs(f.apply_edits(tmpl, plan))["CONTEXT"]
    assert isinstance(ctx, dict)
    assert ctx["START_SCRIPT"] == "echo mine"
    combined = base64.b64decode(ctx["START_SCRIPT_BASE64"]).decode()
    assert "echo mine" in combined and "echo start nginx" in combined


def test_hookds_own_earlier_script_is_replaced_when_the_config_changes() -> None:
    img, tmpl = f.image(), f.vmtemplate()
    plan = plan_for(img, [tmpl], f.world(["lxc"]), f.DEFAULTS)
    after = f.apply_edits(tmpl, plan)
    new_oci = OciProcessFacts("#!/bin/sh\necho v2\n", "sha256:def", "registry:docker.io")
    plan2 = plan_for(f.apply_status(img, plan), [after], f.world(["lxc"], oci=new_oci),
                       f.DEFAULTS)
    ctx = attrs(f.apply_edits(after, plan2))["CONTEXT"]
    assert isinstance(ctx, dict)
    assert base64.b64decode(ctx["START_SCRIPT_BASE64"]).decode() == "#!/bin/sh\necho v2\n"


def test_config_rejected_is_an_error_but_kernel_still_applied() -> None:
    plan = plan_for(f.image(), [f.vmtemplate()],
                      f.world(["kvm"], oci=OciProblem("Cmd holds a NUL byte")), f.DEFAULTS)
    assert plan.status == "error"
    assert plan.reason == "no START_SCRIPT: Cmd holds a NUL byte"
    assert any(c.attribute == "OS/KERNEL_DS" for e in plan.edits for c in e.changes)


def test_disk_by_name_with_owner() -> None:
    img = f.image(name="nginx", uid=3, uname="alice")
    by_uname = f.vmtemplate(disks=[{"IMAGE": "nginx", "IMAGE_UNAME": "alice"}])
    by_uid = f.vmtemplate(6, disks=[{"IMAGE": "nginx", "IMAGE_UID": "3"}])
    implicit = f.vmtemplate(7, uid=3, disks=[{"IMAGE": "nginx"}])
    other_owner = f.vmtemplate(8, uid=4, disks=[{"IMAGE": "nginx"}])
    plan = plan_for(img, [by_uname, by_uid, implicit, other_owner], f.world(["kvm"]),
                      f.DEFAULTS)
    assert sorted(e.template_id for e in plan.edits) == [5, 6, 7]


def test_image_as_second_disk_after_an_os_disk_is_skipped() -> None:
    debian = f.image(20, name="debian", path="/srv/debian.qcow2", attrs=[])
    tmpl = f.vmtemplate(disks=[{"IMAGE_ID": "20"}, {"IMAGE_ID": "10"}])
    plan = plan_for(f.image(), [tmpl], f.world(["kvm"], disk_images={20: debian}),
                      f.DEFAULTS)
    assert plan.status == "skipped"
    assert "boots from DISK 0 (image 20 (debian))" in plan.reason
    assert not plan.edits


def test_image_as_second_disk_after_a_volatile_disk_becomes_root() -> None:
    tmpl = f.vmtemplate(disks=[{"TYPE": "fs", "SIZE": "1024"}, {"IMAGE_ID": "10"}])
    _plan, after = fixed(f.image(), tmpl, hypervisors=["kvm"])
    os_vec = attrs(after)["OS"]
    # The volatile disk takes vdb? No: the first OS disk gets the first letter.
    assert isinstance(os_vec, dict) and os_vec["ROOT"] == "vda"
    _plan_fc, after_fc = fixed(f.image(), tmpl, hypervisors=["firecracker"])
    os_fc = attrs(after_fc)["OS"]
    assert isinstance(os_fc, dict) and os_fc["BOOT"] == "disk1"


def test_several_disks_all_kept_when_a_disk_is_edited() -> None:
    img = f.image(path=f.LXD_PATH, attrs=[("FROM_APP", "5")])
    tmpl = f.vmtemplate(disks=[{"IMAGE_ID": "10", "SIZE": "4096"},
                               {"TYPE": "swap", "SIZE": "512"}],
                        attrs=[("CONTEXT", {"NETWORK": "YES"})])
    _plan, after = fixed(img, tmpl, hypervisors=["kvm"], market="linuxcontainers", oci=None)
    got = attrs(after)
    assert got["DISK"] == [{"IMAGE_ID": "10", "SIZE": "4096", "DEV_PREFIX": "vd"},
                           {"TYPE": "swap", "SIZE": "512"}]


def test_explicit_target_wins_and_is_warned() -> None:
    tmpl = f.vmtemplate(disks=[{"IMAGE_ID": "10", "TARGET": "sdb"}])
    plan, after = fixed(f.image(), tmpl, hypervisors=["kvm"])
    os_vec = attrs(after)["OS"]
    assert isinstance(os_vec, dict) and os_vec["ROOT"] == "sdb"
    assert any("TARGET=sdb" in n for n in plan.templates[0].notes)


def test_values_with_quotes_and_newlines_survive() -> None:
    tmpl = f.vmtemplate(attrs=[("CONTEXT", {"NETWORK": "YES", "MOTD": 'say "hi"\nline2\\'}),
                               ("OS", {"KERNEL_CMD": 'console=ttyS0 foo="a b"'})])
    _plan, after = fixed(f.image(), tmpl, hypervisors=["kvm"])
    got = attrs(after)
    assert isinstance(got["CONTEXT"], dict)
    assert got["CONTEXT"]["MOTD"] == 'say "hi"\nline2\\'
    assert isinstance(got["OS"], dict)
    assert got["OS"]["KERNEL_CMD"] == 'console=ttyS0 foo="a b" rw console=tty0'


def test_no_hosts_means_waiting_for_a_host() -> None:
    plan = plan_for(f.image(), [f.vmtemplate()], f.world([]), f.DEFAULTS)
    assert plan.status == "waiting"
    assert plan.reason.startswith("waiting for a host")


def test_kvm_warns_about_firmware_and_bootloader() -> None:
    tmpl = f.vmtemplate(attrs=[("OS", {"FIRMWARE": "UEFI", "BOOTLOADER": "/usr/bin/pygrub",
                                       "MACHINE": "pc-i440fx-3.1"})])
    plan = plan_for(f.image(), [tmpl], f.world(["kvm"], oci=None, market="linuxcontainers"),
                      f.DEFAULTS)
    notes = " ".join(plan.templates[0].notes)
    assert "OS/FIRMWARE=UEFI" in notes and "BOOTLOADER" in notes and "pc-i440fx-3.1" in notes


def test_several_templates_status_is_the_most_actionable() -> None:
    ok = f.vmtemplate(5, attrs=[("HYPERVISOR", "lxc")])
    waiting = f.vmtemplate(6, name="nginx-kvm", attrs=[("HYPERVISOR", "kvm")])
    plan = plan_for(f.image(), [ok, waiting], f.world(["kvm", "lxc"], kernels={}),
                      f.DEFAULTS)
    assert plan.status == "waiting"
    assert plan.reason == ("template 6 (nginx-kvm): waiting for a kvm kernel (set kernels.kvm "
                           "in hookd.conf)")
    assert dict(plan.image_attributes)["HOOKD_TEMPLATES"] == "5"


def test_requirements_excluding_every_reachable_host_wait_with_the_reason() -> None:
    img = f.image(path=f.TURNKEY_PATH, attrs=[("FROM_APP", "3")])
    vm = f.vmtemplate(attrs=[("SCHED_REQUIREMENTS", 'HYPERVISOR="lx*"')])
    plan = plan_for(img, [vm], f.world(["kvm"], market="turnkeylinux", oci=None), f.DEFAULTS)
    assert plan.status == "waiting"
    assert plan.reason == ("waiting for a host: SCHED_REQUIREMENTS allow lxc, lxd but the "
                           "clusters of datastore 101 (images) only have kvm hosts")
    assert not plan.edits


# -- the promises: pins, a person's flags, outages, wrong decisions -----------------------------
def test_a_template_that_names_its_hypervisor_is_pinned_on_a_mixed_cluster() -> None:
    """No scheduler code reads a template's HYPERVISOR: with kvm and lxc hosts, a template
    fixed for KVM must say so in SCHED_REQUIREMENTS or its VMs may land on LXC."""
    tmpl = f.vmtemplate(attrs=(*f.DOCKERHUB_VM, ("HYPERVISOR", "kvm")))
    plan, after = fixed(f.image(), tmpl, hypervisors=["kvm", "lxc"])
    assert plan.templates[0].hypervisor == "kvm"
    assert attrs(after)["SCHED_REQUIREMENTS"] == 'HYPERVISOR="kvm"'
    again = plan_for(f.image(), [after], f.world(["kvm", "lxc"]), f.DEFAULTS)
    assert again.is_noop or not again.edits
    # One hypervisor only: nothing to pin.
    _plan, alone = fixed(f.image(), tmpl, hypervisors=["kvm"])
    assert "SCHED_REQUIREMENTS" not in attrs(alone)


def test_requirements_decide_over_the_template_hypervisor() -> None:
    tmpl = f.vmtemplate(attrs=(*f.DOCKERHUB_VM, ("HYPERVISOR", "lxc"),
                               ("SCHED_REQUIREMENTS", 'HYPERVISOR="kvm"')))
    plan, after = fixed(f.image(), tmpl, hypervisors=["kvm", "lxc"])
    assert plan.templates[0].hypervisor == "kvm"
    assert attrs(after)["SCHED_REQUIREMENTS"] == 'HYPERVISOR="kvm"'  # already pinned
    assert any("SCHED_REQUIREMENTS exclude it" in n for n in plan.templates[0].notes)


def test_a_persons_ro_is_kept_and_rw_not_added_after_it() -> None:
    tmpl = f.vmtemplate(attrs=(("CONTEXT", {"NETWORK": "YES"}),
                               ("OS", {"KERNEL_CMD": "console=tty0 ro"})))
    plan, after = fixed(f.image(), tmpl, hypervisors=["kvm"])
    os_vec = attrs(after)["OS"]
    assert isinstance(os_vec, dict)
    assert os_vec["KERNEL_CMD"] == "console=tty0 ro"
    assert "kept the KERNEL_CMD a person wrote" in plan.reason and "rw" in plan.reason


def test_an_outage_keeps_the_script_installed_from_the_real_config() -> None:
    img, tmpl = f.image(), f.vmtemplate()
    plan, after = fixed(img, tmpl, hypervisors=["kvm"])
    img = f.apply_status(img, plan)
    down = OciUnavailable("registry unreachable for docker.io/library/nginx:latest: refused; "
                          "the image config sha256:abc it was fixed from is not in the cache",
                          "sha256:abc")
    during = plan_for(img, [after], f.world(["kvm"], oci=down), f.DEFAULTS)
    assert not during.edits  # nothing downgraded, nothing rewritten
    assert during.status == "applied"
    assert during.digest == plan.digest  # the status does not flap with the outage
    assert "the START_SCRIPT installed from it stays" in during.reason
    assert dict(during.image_attributes).keys() <= {"HOOKD_REASON"}
    # A template that has no script yet waits for the config: no fallback for this image.
    fresh = plan_for(img, [f.vmtemplate(7)], f.world(["kvm"], oci=down), f.DEFAULTS)
    assert fresh.status == "waiting" and "waiting for the image config" in fresh.reason


def test_undo_puts_back_exactly_what_was_there() -> None:
    """What a wrong decision wrote (here: an ordinary image believed to be nginx) comes out
    again, every value as it was, hookd's record and the image's status removed."""
    real = f.image(path="/srv/images/db.qcow2", attrs=())
    believed = replace(real, path=f.DOCKER_PATH)
    tmpl = f.vmtemplate(attrs=(("CONTEXT", {"NETWORK": "YES"}),
                               ("OS", {"KERNEL_CMD": "console=tty0", "ARCH": "x86_64"})))
    wrong = plan_for(believed, [tmpl], f.world(["kvm", "lxc"], market=None), f.DEFAULTS)
    damaged = f.apply_edits(tmpl, wrong)
    image = f.apply_status(real, wrong)
    assert attrs(damaged) != attrs(tmpl)

    undo = plan_for(image, [damaged], f.world(["kvm", "lxc"], market=None), f.DEFAULTS)
    assert undo.status is None and undo.undo
    assert attrs(f.apply_edits(damaged, undo)) == attrs(tmpl)
    assert not any(k.startswith("HOOKD_") for k in attrs_of(f.apply_status(image, undo)))


def test_undo_keeps_a_value_a_person_changed_since() -> None:
    real = f.image(path="/srv/images/db.qcow2", attrs=())
    tmpl = f.vmtemplate(attrs=(("CONTEXT", {"NETWORK": "YES"}),))
    wrong = plan_for(replace(real, path=f.DOCKER_PATH), [tmpl], f.world(["kvm"], market=None),
                     f.DEFAULTS)
    damaged = f.apply_edits(tmpl, wrong)
    os_vec = damaged.template.vector("OS")
    assert os_vec is not None
    edited = replace(damaged, template=damaged.template.replaced(
        "OS", [os_vec.set("ROOT", "sdb")]))
    undo = plan_for(f.apply_status(real, wrong), [edited], f.world(["kvm"], market=None),
                    f.DEFAULTS)
    after = attrs(f.apply_edits(edited, undo))
    assert after["OS"] == {"ROOT": "sdb"}
    assert "HOOKD" not in after
    assert any("a person changed it after hookd set it" in n for n in undo.templates[0].notes)


def test_a_version_1_record_is_read_and_rewritten_as_version_2() -> None:
    from handlers.record import Record

    v1 = Record.read(Vector.of({"IMAGE_ID": "10", "HYPERVISOR": "kvm", "VERSION": "1",
                                "OS_ROOT": short_hash("vda")}))
    assert v1.image_id == 10 and v1.hashes == {"OS_ROOT": short_hash("vda")} and not v1.was
    tmpl = f.vmtemplate(attrs=(*f.DOCKERHUB_VM, ("HOOKD", {
        "IMAGE_ID": "10", "HYPERVISOR": "kvm", "VERSION": "1", "OS_ROOT": short_hash("sdb")})))
    plan, after = fixed(f.image(), tmpl, hypervisors=["kvm"])
    record = attrs(after)["HOOKD"]
    assert isinstance(record, dict) and record["VERSION"] == "2"
    # ROOT is gone although hookd had set it: a person removed it, and that is kept.
    assert record["H_OS_ROOT"] == short_hash("sdb")
    assert "ROOT" not in attrs(after)["OS"]  # type: ignore[operator]
    assert any("OS/ROOT" in n and "a person changed it" in n for n in plan.templates[0].notes)
    assert record["H_OS_KERNEL_DS"] == short_hash("$FILE[IMAGE_ID=0]")


def test_a_status_plan_writes_only_status_and_reason_and_only_when_they_change() -> None:
    from handlers.planner import status_plan

    img = f.image()
    plan = status_plan(img, "error", "gave up after 8 attempts: refused")
    assert dict(plan.image_attributes) == {"HOOKD_STATUS": "error",
                                           "HOOKD_REASON": "gave up after 8 attempts: refused"}
    failed = f.apply_status(img, plan)
    assert status_plan(failed, "error", "gave up after 8 attempts: refused").is_noop
    waiting = status_plan(failed, "waiting", "refused; attempt 2 of 8 at 10:42:07 UTC")
    assert dict(waiting.image_attributes) == {
        "HOOKD_STATUS": "waiting", "HOOKD_REASON": "refused; attempt 2 of 8 at 10:42:07 UTC"}


def attrs_of(img: ImageFacts) -> dict[str, object]:
    return {a.name: a.value for a in img.template}


@pytest.mark.parametrize("hypervisors", [["kvm"], ["kvm", "lxc"], ["kvm", "lxc", "firecracker"],
                                         ["firecracker", "lxc"]])
def test_a_fixed_image_replans_to_nothing_at_all(hypervisors: list[str]) -> None:
    """Converged means converged: after the fix, the next plan writes neither a template nor
    the image's status (a note that depended on hookd's own pin made the reason flap)."""
    img, tmpl = f.image(), f.vmtemplate()
    world = f.world(hypervisors)
    plan = plan_for(img, [tmpl], world, f.DEFAULTS)
    again = plan_for(f.apply_status(img, plan), [f.apply_edits(tmpl, plan)], world, f.DEFAULTS)
    assert again.is_noop, (again.edits, again.image_changes)


# -- OpenNebula 7.x: a Linux Containers export re-targeted to KVM ----------------------------
LXC_EXPORT = (  # the linuxcontainers driver's VMTEMPLATE64 (recorded from a real oned 7.4.0)
    'SCHED_REQUIREMENTS = "HYPERVISOR=lxc & ARCH=x86_64"\nCPU = "1"\nVCPU = "2"\n'
    'MEMORY = "768"\nLXC_UNPRIVILEGED = "false"\nGRAPHICS = [\n    LISTEN  ="0.0.0.0",\n'
    '    TYPE  ="vnc"\n]\nCONTEXT = [\n    NETWORK  ="YES",\n'
    '    SSH_PUBLIC_KEY  ="$USER[SSH_PUBLIC_KEY]",\n    SET_HOSTNAME  ="$NAME"\n]\n'
    'RAW = [\n    TYPE="lxc",\n    DATA="lxc.apparmor.profile=unconfined"\n]\n'
    'HYPERVISOR = "lxc"\n')


def lxc_import(image_id: int = 22) -> tuple[ImageFacts, VmTemplateFacts, Template]:
    """What `onemarketapp export` of a Linux Containers app leaves on oned 7.4.0: the image
    (oned added DEV_PREFIX=sd) and the VM template (the app's template, the image's DISK)."""
    from hookd.documents import parse_attributes

    app_template = parse_attributes(LXC_EXPORT)
    img = f.image(image_id, name="debian_bookworm", path=f.LXD_PATH,
                  attrs=(("DEV_PREFIX", "sd"), ("FROM_APP", "0")))
    tmpl = VmTemplateFacts(43, "debian_bookworm", 0, "oneadmin", app_template.replaced(
        "DISK", [Vector.of({"IMAGE_ID": str(image_id)})]))
    return img, tmpl, app_template


def lxc_world(hypervisors: list[str], app_template: Template | None, **kw: object) -> World:
    world = f.world(hypervisors, market="linuxcontainers", oci=None, version=(7, 4, 0), **kw)  # type: ignore[arg-type]
    assert world.app is not None
    return replace(world, app=replace(world.app, vm_template=app_template))


def test_the_export_is_retargeted_to_kvm_where_only_kvm_runs() -> None:
    img, tmpl, app = lxc_import()
    world = lxc_world(["kvm"], app)
    plan = plan_for(img, [tmpl], world, f.DEFAULTS)
    assert plan.status == "applied", plan.reason
    got = attrs(f.apply_edits(tmpl, plan))
    assert got["HYPERVISOR"] == "kvm"
    assert got["SCHED_REQUIREMENTS"] == "HYPERVISOR=kvm & ARCH=x86_64"
    assert "RAW" not in got and "LXC_UNPRIVILEGED" not in got  # nothing LXC-only on KVM
    assert got["DISK"] == {"IMAGE_ID": "22", "DEV_PREFIX": "vd"}
    assert got["OS"] == {"KERNEL_DS": "$FILE[IMAGE_ID=0]", "ROOT": "vda",
                         "KERNEL_CMD": "rw console=tty0"}
    assert "START_SCRIPT_BASE64" not in got["CONTEXT"]  # type: ignore[operator]
    assert "re-targeted to kvm" in plan.reason and "unchanged" in plan.reason
    assert "removed the LXC-only LXC_UNPRIVILEGED, RAW" in plan.reason
    assert "DEV_PREFIX=vd" in plan.reason and "sda" in plan.reason  # why the disk's prefix
    # Converged: the next plan writes nothing at all.
    again = plan_for(f.apply_status(img, plan), [f.apply_edits(tmpl, plan)], world, f.DEFAULTS)
    assert again.is_noop, (again.edits, again.image_changes)


def test_a_retarget_is_undone_exactly() -> None:
    img, tmpl, app = lxc_import()
    world = lxc_world(["kvm"], app)
    plan = plan_for(img, [tmpl], world, f.DEFAULTS)
    fixed_tmpl, fixed_img = f.apply_edits(tmpl, plan), f.apply_status(img, plan)
    # Were it no container image after all, everything hookd wrote goes back.
    plain = replace(fixed_img, path="/srv/images/x.qcow2",
                    template=fixed_img.template.replaced("FROM_APP", []))
    undo = plan_for(plain, [fixed_tmpl], replace(world, app=None, market=None), f.DEFAULTS)
    assert undo.undo
    assert attrs(f.apply_edits(fixed_tmpl, undo)) == attrs(tmpl)


@pytest.mark.parametrize(("hypervisors", "expected"), [(["lxc"], "lxc"),
                                                       (["kvm", "lxc"], "lxc")])
def test_the_export_is_left_to_lxc_where_lxc_runs(hypervisors: list[str], expected: str) -> None:
    img, tmpl, app = lxc_import()
    plan = plan_for(img, [tmpl], lxc_world(hypervisors, app), f.DEFAULTS)
    assert plan.status == "applied" and plan.templates[0].hypervisor == expected
    assert not plan.edits  # an LXC rootfs needs nothing, and the export already pins lxc
    assert "re-targeted" not in plan.reason


def test_a_persons_template_is_never_retargeted() -> None:
    img, tmpl, app = lxc_import()
    mine = replace(tmpl, template=tmpl.template.replaced("MEMORY", ["2048"]))
    plan = plan_for(img, [mine], lxc_world(["kvm"], app), f.DEFAULTS)
    assert plan.status == "waiting" and not plan.edits
    assert plan.reason.startswith("waiting for a host")
    off = replace(f.DEFAULTS, retarget=False)
    plan = plan_for(img, [tmpl], lxc_world(["kvm"], app), off)
    assert plan.status == "waiting" and not plan.edits


def test_no_retarget_before_the_kvm_kernel_is_there() -> None:
    img, tmpl, app = lxc_import()
    plan = plan_for(img, [tmpl], lxc_world(["kvm"], app, kernels={}), f.DEFAULTS)
    assert plan.status == "waiting" and "kvm kernel" in plan.reason
    assert not plan.edits  # the re-target is written together with the fix, or not at all


def test_a_persons_kvm_template_for_the_same_image_keeps_working() -> None:
    img, tmpl, app = lxc_import()
    mine = VmTemplateFacts(50, "mine", 0, "oneadmin", Template.of(
        ("CPU", "1"), ("MEMORY", "1024"), ("HYPERVISOR", "kvm"),
        ("DISK", Vector.of({"IMAGE_ID": "22"})), ("CONTEXT", Vector.of({"NETWORK": "YES"}))))
    plan = plan_for(img, [tmpl, mine], lxc_world(["kvm"], app), f.DEFAULTS)
    assert plan.status == "applied", plan.reason
    after = attrs(f.apply_edits(mine, plan))
    assert after["HYPERVISOR"] == "kvm" and after["OS"]["ROOT"] == "vda"  # type: ignore[index]
    assert "re-targeted" not in " ".join(plan.templates[1].notes)
