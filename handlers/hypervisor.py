"""Which hypervisor will run a VM template.

Order of evidence: the template's own ``HYPERVISOR`` attribute, then what its
``SCHED_REQUIREMENTS`` allow, intersected with the VM_MAD of the hosts in the clusters of the
image's datastore (hosts can only use images from datastores of their cluster); a
configuration override beats both.

``SCHED_REQUIREMENTS`` uses the scheduler's expression language (``&``, ``|``, ``!``,
parentheses, ``=``/``!=`` with shell globs for strings, ``<``, ``>``, ``@>``). Only the
``HYPERVISOR`` comparisons can be decided here; every other comparison is *unknown*, and the
expression is evaluated in three-valued (Kleene) logic: a hypervisor is possible unless the
expression is definitely false for it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

Tri = bool | None  # True, False, or unknown

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<and>&) | (?P<or>\|) |
        (?P<op>!=|@>|!@>|=|<|>) |
        (?P<not>!) |
        (?P<string>"(?:[^"\\]|\\.)*") |
        (?P<word>[^\s()&|!=<>@"]+)
    )""",
    re.VERBOSE,
)


class RequirementSyntaxError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise RequirementSyntaxError("cannot read requirements at "
                                         f"{text[pos:].lstrip()[:20]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "string":
            value = value[1:-1].replace('\\"', '"')
        out.append((kind, value))
        pos = match.end()  # the next match skips the whitespace before its token
    return out


class _Parser:
    """Recursive descent over: or := and ('|' and)*; and := unary ('&' unary)*; ..."""

    def __init__(self, tokens: list[tuple[str, str]], hypervisor: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.hv = hypervisor
        self.mentions_hypervisor = False

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise RequirementSyntaxError("requirements end too early")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> Tri:
        value = self.expr_or()
        if self.pos != len(self.tokens):
            raise RequirementSyntaxError("unexpected text after the requirements expression")
        return value

    def expr_or(self) -> Tri:
        value = self.expr_and()
        while self.peek() == "or":
            self.take()
            right = self.expr_and()
            value = True if value is True or right is True else (
                None if value is None or right is None else False)
        return value

    def expr_and(self) -> Tri:
        value = self.unary()
        while self.peek() == "and":
            self.take()
            right = self.unary()
            value = False if value is False or right is False else (
                None if value is None or right is None else True)
        return value

    def unary(self) -> Tri:
        if self.peek() == "not":
            self.take()
            inner = self.unary()
            return None if inner is None else not inner
        if self.peek() == "lparen":
            self.take()
            value = self.expr_or()
            if self.take()[0] != "rparen":
                raise RequirementSyntaxError("missing ')' in requirements")
            return value
        return self.comparison()

    def comparison(self) -> Tri:
        kind, name = self.take()
        if kind not in ("word", "string"):
            raise RequirementSyntaxError(f"expected an attribute name, got {name!r}")
        op_kind, op = self.take()
        if op_kind != "op":
            raise RequirementSyntaxError(f"expected an operator after {name!r}")
        value_kind, value = self.take()
        if value_kind not in ("word", "string"):
            raise RequirementSyntaxError(f"expected a value after {name!r} {op}")
        if name.upper() != "HYPERVISOR":
            return None
        self.mentions_hypervisor = True
        matches = fnmatch.fnmatchcase(self.hv, value.lower())
        if op == "=":
            return matches
        if op == "!=":
            return not matches
        return None


@dataclass(frozen=True, slots=True)
class RequirementFilter:
    """What SCHED_REQUIREMENTS say about hypervisors."""

    text: str
    mentions_hypervisor: bool
    error: str = ""

    def allows(self, hypervisor: str) -> bool:
        if not self.mentions_hypervisor or self.error:
            return True
        parser = _Parser(_tokens(self.text), hypervisor.lower())
        return parser.parse() is not False


def requirement_filter(text: str | None) -> RequirementFilter:
    text = (text or "").strip()
    if not text:
        return RequirementFilter("", False)
    try:
        parser = _Parser(_tokens(text), "\0")
        parser.parse()
    except RequirementSyntaxError as exc:
        return RequirementFilter(text, False, str(exc))
    return RequirementFilter(text, parser.mentions_hypervisor)


# VM_MADs that boot the same template: qemu is KVM without acceleration, lxd is 6.x's LXD
# driver (host kernel, like lxc).
_SAME_BOOT = {"qemu": "kvm", "lxd": "lxc"}


def same_boot(a: str, b: str) -> bool:
    return _SAME_BOOT.get(a, a) == _SAME_BOOT.get(b, b)


def pin_requirements(current: str | None, hypervisor: str, hosts: Iterable[str]) -> str:
    """SCHED_REQUIREMENTS that keep whatever was required and exclude every hypervisor of
    ``hosts`` (the image's hosts) that cannot boot a template fixed for ``hypervisor``.

    Requirements that already do so are returned unchanged, so pinning is idempotent.
    """
    current = (current or "").strip()
    req = requirement_filter(current)
    if (req.mentions_hypervisor and req.allows(hypervisor)
            and not any(req.allows(h) for h in hosts if not same_boot(h, hypervisor))):
        return current
    pin = f'HYPERVISOR="{hypervisor}"'
    if not current:
        return pin
    return f"({current}) & {pin}"


@dataclass(frozen=True, slots=True)
class Resolution:
    candidates: tuple[str, ...]
    evidence: str
    needs_pin: bool
    allowed: tuple[str, ...] = ()  # what SCHED_REQUIREMENTS allow, when they say anything
    conflict: str = ""  # the template's HYPERVISOR that SCHED_REQUIREMENTS exclude


def resolve(
    *,
    template_hypervisor: str | None,
    requirements: str | None,
    host_hypervisors: Iterable[str],
    override: str | None,
    known: Iterable[str] = (),
) -> Resolution:
    """The hypervisors that could run the template, and how we know.

    The scheduler places a VM by SCHED_REQUIREMENTS (and oned's automatic requirements:
    clusters, datastores) only; no scheduler code of 6.0 - 7.4 reads a template's
    ``HYPERVISOR`` (``VirtualMachine::automatic_requirements``, src/vm/VirtualMachine.cc,
    names HYPERVISOR only for public clouds). So requirements that name hypervisors decide;
    the template's ``HYPERVISOR`` says which of those is meant. Whenever the hosts that can
    reach the image run more than one hypervisor, the choice must be pinned, whatever made
    it: without a pin the scheduler may place the VM on a host it was not fixed for.

    With requirements that name hypervisors, the candidates are those the requirements allow
    *and* the image's hosts have: a template whose requirements exclude every host that can
    reach its image cannot be scheduled, and no edit of hookd's would change that.
    """
    hosts = sorted({h.lower() for h in host_hypervisors if h})
    mixed = len(hosts) > 1
    if override:
        return Resolution((override.lower(),), "configuration override", mixed)
    named = (template_hypervisor or "").strip().lower() or None
    req = requirement_filter(requirements)
    if req.mentions_hypervisor:
        pool = sorted(set(hosts) | {k.lower() for k in known})
        allowed = tuple(h for h in pool if req.allows(h))
        chosen = tuple(h for h in allowed if h in hosts)
        if named is not None and named in chosen:
            return Resolution((named,), "template HYPERVISOR within SCHED_REQUIREMENTS", mixed,
                              allowed)
        conflict = named if named is not None and named not in allowed else ""
        return Resolution(chosen, "SCHED_REQUIREMENTS", mixed, allowed, conflict)
    if named is not None:
        # The same rule as for requirements: the template can only run where its image is.
        return Resolution((named,) if named in hosts else (), "template HYPERVISOR", mixed,
                          (named,))
    return Resolution(tuple(hosts), "hosts of the image datastore's clusters", mixed)
