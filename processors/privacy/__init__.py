"""The privacy processors: `secret_mask` and `uuid_normalize`, their rules, the anchor scan and the wire walker
(C, with a Python fallback)."""
