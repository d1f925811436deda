"""The network's logic, pure: models, wire format and state machines, with no I/O."""
