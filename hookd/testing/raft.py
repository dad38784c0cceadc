"""The Raft role the simulated oned reports and obeys.

``RaftManager::State`` (``include/RaftManager.h``): SOLO 0, CANDIDATE 1, FOLLOWER 2,
LEADER 3. ``RaftManager::to_xml`` (``src/raft/RaftManager.cc``) writes LOG_INDEX/LOG_TERM
as -1 in solo mode; the recorded solo oned answers ``SERVER_ID -1``, ``STATE 0``.

``Request::execute`` (``src/rm/Request.cc``) uses the role for *leader-only* calls: a
candidate refuses them (``Cannot process request, oned cluster in election mode``), a
follower forwards them to the leader and returns the leader's answer -- while its own API
event keeps ``RESULT 0`` (``att.success`` is never set on the follower) and has no OUT
parameters. State changes happen on the leader, so a follower's hook manager publishes
no STATE events.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

ROLES = {"solo": 0, "candidate": 1, "follower": 2, "leader": 3}


@dataclass
class RaftState:
    """Current role plus the counters ``to_xml`` prints."""

    role: str = "solo"
    term: int = 0
    commit: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def set_role(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown raft role {role!r}; use one of {sorted(ROLES)}")
        with self._lock:
            self.role = role
            if role != "solo":
                self.term += 1

    def record_write(self) -> None:
        """A leader-only call succeeded: one more replicated log record."""
        with self._lock:
            if self.role == "leader":
                self.commit += 1

    def to_xml(self) -> str:
        with self._lock:
            state = ROLES[self.role]
            if self.role == "solo":
                return (
                    "<RAFT><SERVER_ID>-1</SERVER_ID><STATE>0</STATE><TERM>0</TERM>"
                    "<VOTEDFOR>-1</VOTEDFOR><COMMIT>0</COMMIT><LOG_INDEX>-1</LOG_INDEX>"
                    "<LOG_TERM>-1</LOG_TERM><FEDLOG_INDEX>-1</FEDLOG_INDEX></RAFT>"
                )
            server_id = 1 if self.role == "follower" else 0
            voted = 0
            return (
                f"<RAFT><SERVER_ID>{server_id}</SERVER_ID><STATE>{state}</STATE>"
                f"<TERM>{self.term}</TERM><VOTEDFOR>{voted}</VOTEDFOR>"
                f"<COMMIT>{self.commit}</COMMIT><LOG_INDEX>{self.commit}</LOG_INDEX>"
                f"<LOG_TERM>{self.term}</LOG_TERM><FEDLOG_INDEX>-1</FEDLOG_INDEX></RAFT>"
            )
