"""Independent verifiers: witnesses and audit nodes that check what a log publishes."""
