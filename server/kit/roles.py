from enum import StrEnum


class Role(StrEnum):
    """Project roles, weakest first."""

    viewer = "viewer"
    annotator = "annotator"
    owner = "owner"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: "Role") -> bool:
        return self.rank >= needed.rank


_RANK = {Role.viewer: 0, Role.annotator: 1, Role.owner: 2}
