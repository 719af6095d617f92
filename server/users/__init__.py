"""The user directory, so project owners can find people to add."""
